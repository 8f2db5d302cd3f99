//! A lean HTTP/2 server for gRPC over cleartext TCP (h2c with prior knowledge).
//!
//! hyper's HTTP/2 server keeps about 28 KiB of buffers per connection (h2's 16 KiB write
//! buffer, an 8 KiB read buffer, a 4 KiB HPACK buffer) whether or not anything is being
//! sent. A fan-out server holds thousands of mostly idle streaming connections, so this
//! module serves them with what an idle connection actually needs: see [`conn`].
//!
//! It implements what gRPC clients use of RFC 9113 and RFC 7541: the connection
//! preface, SETTINGS, PING, GOAWAY, flow control in both directions, HEADERS with
//! CONTINUATION and padding, RST_STREAM, and HPACK decoding with Huffman; responses are
//! encoded without the dynamic table. No server push, no priorities, no TLS, no
//! HTTP/1.1: servers that need those use tonic's transport.

mod body;
mod conn;
pub(crate) mod hpack;
mod out;

pub(crate) use body::RecvBody;
pub(crate) use conn::{Config, serve};
