//! TLS for the replication connection, through an in-process relay.
//!
//! pgwire-replication speaks the replication protocol over TCP or a Unix socket; its
//! own TLS feature hard-wires rustls's `ring` provider (a second crypto library next to
//! the aws-lc-rs one tonic uses) and does not follow libpq's rules (`require` ignores a
//! root certificate, `verify-full` refuses IP addresses). So laredo does the TLS part
//! itself, with the same [`crate::tls`] code as the query connections:
//!
//! 1. connect TCP to the server, send PostgreSQL's SSLRequest (or start TLS directly
//!    with `sslnegotiation=direct`) and run the handshake; every verification error
//!    surfaces here, before pgwire-replication runs;
//! 2. listen on a Unix socket in a fresh directory only this user can enter (mode
//!    0700) and point pgwire-replication at it, with its TLS off;
//! 3. accept exactly one connection, and only from this process (checked with the
//!    peer's credentials), delete the socket and its directory, and copy bytes both
//!    ways until either side closes. Closing one side closes the other, so the relay
//!    lives exactly as long as the replication session.
//!
//! The plaintext leg never leaves this process's own socket pair.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::replication::ConnectionParams;
use crate::tls::{self, SslMode, SslNegotiation, TlsError};

/// The longest the TCP connect and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the relay waits for pgwire-replication to connect to it.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Copy buffer per direction: the replication stream moves in large CopyData bursts.
const RELAY_BUFFER: usize = 64 * 1024;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Where pgwire-replication should connect.
#[derive(Debug)]
pub(crate) enum Route {
    /// Straight to the server, without TLS.
    Direct,
    /// To the relay's Unix socket: `{dir}/.s.PGSQL.{port}`.
    Relay {
        /// The socket directory (pgwire-replication's "host").
        dir: PathBuf,
        /// The port in the socket's name.
        port: u16,
    },
}

/// Opens the TLS leg for a replication connection to `params` when its settings call
/// for TLS, and starts the relay; [`Route::Direct`] when they do not (no TLS, a Unix
/// socket host, or `prefer` against a server without TLS).
///
/// # Errors
/// The server cannot be reached, refuses TLS under `require` or stricter, or fails
/// verification; a certificate file is unusable.
pub(crate) async fn open(params: &ConnectionParams) -> Result<Route, TlsError> {
    let settings = &params.tls;
    // libpq ignores sslmode on Unix sockets; `allow` starts without TLS.
    if params.host.starts_with('/') || matches!(settings.mode, SslMode::Disable | SslMode::Allow) {
        return Ok(Route::Direct);
    }
    let client = tls::client_config(settings).await?;
    let server = format!("{}:{}", params.host, params.port);
    let connect = async {
        let tcp = match params.hostaddr {
            Some(addr) => TcpStream::connect((addr, params.port)).await,
            None => TcpStream::connect((params.host.as_str(), params.port)).await,
        };
        let mut tcp = tcp.map_err(|source| TlsError::Io {
            server: server.clone(),
            source,
        })?;
        let io = |source| TlsError::Io {
            server: server.clone(),
            source,
        };
        tcp.set_nodelay(true).map_err(io)?;
        if settings.negotiation == SslNegotiation::Postgres {
            tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
            let answer = tcp.read_u8().await.map_err(io)?;
            if answer != b'S' {
                return if settings.mode.requires_tls() {
                    Err(TlsError::NotOffered {
                        server: server.clone(),
                        mode: settings.mode,
                    })
                } else {
                    Ok(None)
                };
            }
        }
        tls::handshake(&client, &params.host, &server, tcp)
            .await
            .map(Some)
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| TlsError::Io {
            server: server.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS connection within {CONNECT_TIMEOUT:?}"),
            ),
        })??;
    let Some(stream) = stream else {
        tracing::debug!(
            server,
            "the server offers no TLS; sslmode=prefer goes on without"
        );
        return Ok(Route::Direct);
    };
    let dir = private_dir().await.map_err(|source| TlsError::Io {
        server: "the local relay socket".to_string(),
        source,
    })?;
    let socket = dir.join(format!(".s.PGSQL.{}", params.port));
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(source) => {
            let _ = tokio::fs::remove_dir(&dir).await;
            return Err(TlsError::Io {
                server: format!("the local relay socket {}", socket.display()),
                source,
            });
        }
    };
    // Detached on purpose: the task ends when either side of the relay closes, which
    // is when the replication session it serves ends.
    tokio::spawn(relay(listener, socket, dir.clone(), stream));
    Ok(Route::Relay {
        dir,
        port: params.port,
    })
}

/// A fresh directory only this user can enter.
async fn private_dir() -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "laredo-pgtls-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut builder = tokio::fs::DirBuilder::new();
    builder.mode(0o700);
    builder.create(&dir).await?;
    Ok(dir)
}

async fn relay(
    listener: UnixListener,
    socket: PathBuf,
    dir: PathBuf,
    mut tls: tokio_rustls::client::TlsStream<TcpStream>,
) {
    let accepted = tokio::time::timeout(ACCEPT_TIMEOUT, accept_own(&listener)).await;
    drop(listener);
    remove(&socket, &dir).await;
    let mut local = match accepted {
        Ok(Ok(local)) => local,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "the replication relay could not accept");
            return;
        }
        Err(_) => {
            tracing::debug!("the replication connection never reached its relay");
            return;
        }
    };
    match tokio::io::copy_bidirectional_with_sizes(&mut local, &mut tls, RELAY_BUFFER, RELAY_BUFFER)
        .await
    {
        Ok(_) => tracing::debug!("replication relay closed"),
        Err(e) => tracing::debug!(error = %e, "replication relay ended"),
    }
}

/// The first connection from this very process; others are dropped.
async fn accept_own(listener: &UnixListener) -> std::io::Result<UnixStream> {
    let own = i32::try_from(std::process::id()).ok();
    loop {
        let (stream, _) = listener.accept().await?;
        let peer = stream.peer_cred()?.pid();
        if peer.is_some() && peer == own {
            return Ok(stream);
        }
        tracing::warn!(
            peer_pid = ?peer,
            "a foreign process connected to the replication relay socket; dropped"
        );
    }
}

async fn remove(socket: &Path, dir: &Path) {
    let _ = tokio::fs::remove_file(socket).await;
    let _ = tokio::fs::remove_dir(dir).await;
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    use super::*;

    /// A foreign process that connects to the relay socket first is dropped, and the
    /// relay takes the connection from its own process.
    #[tokio::test]
    async fn only_a_connection_from_this_process_is_taken() {
        let dir = private_dir().await.unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "only this user may enter");
        let socket = dir.join(".s.PGSQL.5432");
        let listener = UnixListener::bind(&socket).unwrap();

        let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX)\n\
                      s.connect(sys.argv[1])\n\
                      print('connected', flush=True)\n\
                      print('closed' if s.recv(1) == b'' else 'data', flush=True)\n";
        let mut foreign = Command::new("python3")
            .args(["-c", script])
            .arg(&socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut lines = std::io::BufReader::new(foreign.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "connected");

        let _own = UnixStream::connect(&socket).await.unwrap();
        let taken = accept_own(&listener).await.unwrap();
        assert_eq!(
            taken.peer_cred().unwrap().pid(),
            i32::try_from(std::process::id()).ok()
        );
        let answer = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
            .await
            .unwrap();
        assert_eq!(answer, "closed", "the foreign connection is dropped");
        foreign.wait().unwrap();
        remove(&socket, &dir).await;
        assert!(!dir.exists());
    }
}
