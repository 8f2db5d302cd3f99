//! The crate's error type.

use std::net::SocketAddr;

use laredo_core::ConfigErrors;

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has problems, all of them listed, each starting with the
    /// setting at fault (`tls.cert_path: cannot read "/etc/laredo/cert.pem": ...`).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The listen address could not be bound.
    #[error("failed to bind the gRPC server to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("failed to build the gRPC reflection service")]
    Reflection {
        /// The cause.
        #[source]
        source: tonic_reflection::server::Error,
    },
    /// The server failed while serving.
    #[error("the gRPC server on {addr} failed")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}
