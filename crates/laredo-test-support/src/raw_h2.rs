//! A raw HTTP/2 client for tests of server limits: it writes frames as told, including
//! the misbehaviour a real client library refuses to produce (more streams than the
//! server allows, a flood of streams reset at once).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HTTP/2 frame types used here.
pub mod frame_type {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
}

/// One frame as read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Frame type ([`frame_type`]).
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            frame_type::RST_STREAM => 0,
            frame_type::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A cleartext HTTP/2 connection driven frame by frame.
#[derive(Debug)]
pub struct RawH2 {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, and acknowledges the server's
    /// SETTINGS (so they are in force) before returning.
    ///
    /// # Errors
    /// Connection and I/O errors, or a server that answers with something else.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut client = Self {
            stream,
            buffer: Vec::new(),
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut hello, frame_type::SETTINGS, 0, 0, &[]);
        client.stream.write_all(&hello).await?;
        loop {
            let received = client.read_frame().await?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "closed before SETTINGS")
            })?;
            if received.kind == frame_type::SETTINGS && received.flags & 1 == 0 {
                let mut ack = Vec::new();
                frame(&mut ack, frame_type::SETTINGS, 1, 0, &[]);
                client.stream.write_all(&ack).await?;
                return Ok(client);
            }
        }
    }

    /// Writes HEADERS for a gRPC call of `path` on `stream` (odd, increasing), the
    /// request left open (no END_STREAM).
    pub fn headers(out: &mut Vec<u8>, stream: u32, path: &str) {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        literal_indexed_name(&mut block, 4, path); // :path
        literal_indexed_name(&mut block, 1, "localhost"); // :authority
        literal_indexed_name(&mut block, 31, "application/grpc"); // content-type
        block.push(0x00); // te: trailers, a literal with a new name
        string(&mut block, "te");
        string(&mut block, "trailers");
        frame(out, frame_type::HEADERS, 0x4, stream, &block);
    }

    /// Writes a gRPC message `message` (already encoded) as DATA on `stream`, ending
    /// the request.
    pub fn data(out: &mut Vec<u8>, stream: u32, message: &[u8]) {
        let mut payload = vec![0];
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(message);
        frame(out, frame_type::DATA, 0x1, stream, &payload);
    }

    /// Writes RST_STREAM(CANCEL) for `stream`.
    pub fn reset(out: &mut Vec<u8>, stream: u32) {
        frame(out, frame_type::RST_STREAM, 0, stream, &8u32.to_be_bytes());
    }

    /// Sends bytes built with [`headers`](Self::headers), [`data`](Self::data),
    /// [`reset`](Self::reset).
    ///
    /// # Errors
    /// I/O errors (the server closed the connection).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, `None` when the server closed the connection. PINGs are
    /// answered on the way.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn read_frame(&mut self) -> io::Result<Option<RawFrame>> {
        loop {
            if self.buffer.len() >= 9 {
                let len = usize::from(self.buffer[0]) << 16
                    | usize::from(self.buffer[1]) << 8
                    | usize::from(self.buffer[2]);
                if self.buffer.len() >= 9 + len {
                    let stream = u32::from_be_bytes([
                        self.buffer[5],
                        self.buffer[6],
                        self.buffer[7],
                        self.buffer[8],
                    ]) & 0x7fff_ffff;
                    let frame = RawFrame {
                        kind: self.buffer[3],
                        flags: self.buffer[4],
                        stream,
                        payload: self.buffer[9..9 + len].to_vec(),
                    };
                    self.buffer.drain(..9 + len);
                    if frame.kind == frame_type::PING && frame.flags & 1 == 0 {
                        let mut pong = Vec::new();
                        crate::raw_h2::frame(&mut pong, frame_type::PING, 1, 0, &frame.payload);
                        // The server may be closing: a failed answer is not an error here.
                        let _ = self.stream.write_all(&pong).await;
                    }
                    return Ok(Some(frame));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(None);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until one matches `wanted` (returned) or the connection closes
    /// (`None`), for at most `within`.
    ///
    /// # Errors
    /// I/O errors, or `TimedOut` when `within` passes first.
    pub async fn read_until(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&RawFrame) -> bool,
    ) -> io::Result<Option<RawFrame>> {
        tokio::time::timeout(within, async {
            while let Some(frame) = self.read_frame().await? {
                if wanted(&frame) {
                    return Ok(Some(frame));
                }
            }
            Ok(None)
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no such frame in time"))?
    }
}

/// Appends one frame.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK literal without indexing, its name from the static table.
fn literal_indexed_name(out: &mut Vec<u8>, index: u8, value: &str) {
    if index < 15 {
        out.push(index);
    } else {
        out.push(0x0f);
        out.push(index - 15);
    }
    string(out, value);
}

/// An HPACK string literal without Huffman coding (shorter than 127 bytes).
fn string(out: &mut Vec<u8>, value: &str) {
    debug_assert!(value.len() < 127);
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}
