//! The gRPC channel to a laredo server (plaintext or TLS), per-request metadata (bearer
//! token, deadline) and the translation of gRPC failures into plain error messages; a
//! refused token gets a hint on how to send the right one.
//!
//! Every unary call gets a fresh deadline when it is made (not when the connection is
//! opened), so a slow connect or an earlier call never eats into the next call's time.
//! Streams carry no deadline.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use laredo_proto::laredo::replication::v1::laredo_replication_service_client::LaredoReplicationServiceClient;
use laredo_proto::laredo::v1::laredo_oam_service_client::LaredoOamServiceClient;
use laredo_proto::laredo::v1::laredo_query_service_client::LaredoQueryServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::cli::{GlobalArgs, Token};

/// A connected channel and what every request needs.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    address: String,
    channel: Channel,
    authorization: Option<MetadataValue<Ascii>>,
    timeout: Duration,
}

/// Where a token comes from, for hints.
const TOKEN_FLAGS: &str = "--token or LAREDO_TOKEN";

impl Connection {
    /// Connects to `address` (`host:port` or a URL) with the TLS, token and timeout
    /// settings of `global`.
    ///
    /// # Errors
    ///
    /// "cannot reach laredo at URL: reason" when the server does not answer; a bad
    /// address, certificate file or token.
    pub(crate) async fn open(address: &str, global: &GlobalArgs) -> anyhow::Result<Self> {
        let uri = endpoint_uri(address, global.tls);
        let tls = uri.starts_with("https://");
        if global.tls && !tls {
            bail!("--tls with the plaintext address {uri}: use https:// or host:port");
        }
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| anyhow!("invalid address {address:?}: {e}"))?
            .connect_timeout(global.timeout);
        if tls {
            endpoint = endpoint
                .tls_config(tls_config(global)?)
                .map_err(|e| anyhow!("invalid TLS configuration: {e}"))?;
        } else if global.cert.is_some() || global.tls_server_name.is_some() {
            bail!(
                "--cert and --tls-server-name (LAREDO_TLS_SERVER_NAME) apply to TLS: add --tls \
                 or use an https:// address"
            );
        }
        let authorization = match global.token.as_ref().map(Token::expose) {
            Some(token) if !token.is_empty() => {
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!("the token must be visible ASCII without spaces");
                }
                let mut value = MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| anyhow!("the token must be visible ASCII without spaces"))?;
                // Never indexed by HPACK.
                value.set_sensitive(true);
                Some(value)
            }
            _ => None,
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable_error(&uri, &e))?;
        Ok(Self {
            address: uri,
            channel,
            authorization,
            timeout: global.timeout,
        })
    }

    /// The deadline of each unary call (`--timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URL connected to.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// A client of the OAM service.
    pub(crate) fn oam(&self) -> LaredoOamServiceClient<Channel> {
        LaredoOamServiceClient::new(self.channel.clone())
    }

    /// A client of the Query service.
    pub(crate) fn query(&self) -> LaredoQueryServiceClient<Channel> {
        LaredoQueryServiceClient::new(self.channel.clone())
    }

    /// A client of the replication (fan-out) service.
    pub(crate) fn replication(&self) -> LaredoReplicationServiceClient<Channel> {
        LaredoReplicationServiceClient::new(self.channel.clone())
    }

    /// A unary request: the token, when set, and a deadline starting now.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.stream_request(message);
        request.set_timeout(self.timeout);
        request
    }

    /// A streaming request: the token, when set, and no deadline.
    pub(crate) fn stream_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    /// Awaits a unary call under a fresh deadline and unwraps its response.
    ///
    /// # Errors
    ///
    /// The call's status in plain words (see [`Connection::status_error`]), or a
    /// timeout.
    pub(crate) async fn call<R>(
        &self,
        call: impl Future<Output = Result<Response<R>, Status>>,
    ) -> anyhow::Result<R> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(&status)),
            Err(_) => Err(anyhow!(
                "no answer from {} within {:?} (DEADLINE_EXCEEDED)",
                self.address,
                self.timeout
            )),
        }
    }

    /// A gRPC failure in plain words: `message (CODE)`, or "cannot reach laredo at
    /// URL: reason" when the transport failed. A refused token gets a `hint:` line on
    /// how to send one (the server's message says which role the method needs).
    pub(crate) fn status_error(&self, status: &Status) -> anyhow::Error {
        if status.code() == Code::Unavailable
            && let Some(source) = status.source()
        {
            return unreachable_error(&self.address, source);
        }
        // The connection broke in a way HTTP/2 did not expect: as when plaintext meets a
        // TLS port (tonic reports UNKNOWN "transport error" or INTERNAL "h2 protocol
        // error", depending on when the TLS alert arrives).
        if is_broken_connection(status) {
            let reason = match status.source() {
                Some(source) => transport_reason(source),
                None => status.message().to_string(),
            };
            let mut error = format!("the connection to {} failed: {reason}", self.address);
            if self.address.starts_with("http://") {
                error.push_str(
                    "\nhint: if the server serves TLS, add --tls and --cert <ca.pem> \
                     (or use an https:// address)",
                );
            }
            return anyhow!(error);
        }
        match token_hint(status.code(), self.authorization.is_some()) {
            Some(hint) => anyhow!("{}\nhint: {hint}", status_text(status)),
            None => anyhow!("{}", status_text(status)),
        }
    }
}

/// A status tonic made from a broken connection rather than one the server sent.
fn is_broken_connection(status: &Status) -> bool {
    match status.code() {
        Code::Unknown => status.source().is_some() || status.message() == "transport error",
        Code::Internal => status.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

/// The TLS settings of the flags: the CA of `--cert` (required) and the server name.
fn tls_config(global: &GlobalArgs) -> anyhow::Result<ClientTlsConfig> {
    let Some(cert) = &global.cert else {
        bail!("TLS needs --cert <ca.pem>: the CA certificate that signed the server's");
    };
    let pem = std::fs::read(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        bail!("--cert {} holds no PEM certificate", cert.display());
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    if let Some(name) = &global.tls_server_name {
        if name.is_empty() {
            bail!("--tls-server-name must not be empty");
        }
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// How to fix a refused token: none was sent, the server does not know it, or its role
/// is too small.
fn token_hint(code: Code, token_sent: bool) -> Option<String> {
    match (code, token_sent) {
        (Code::Unauthenticated, false) => Some(format!(
            "no token was sent: pass one with {TOKEN_FLAGS} (a read token suffices for reads)"
        )),
        (Code::Unauthenticated, true) => Some(format!(
            "the server does not accept the token from {TOKEN_FLAGS} for this call"
        )),
        (Code::PermissionDenied, true) => Some(format!(
            "this command needs an admin token: pass one with {TOKEN_FLAGS}"
        )),
        _ => None,
    }
}

/// `message (CODE)` for a status.
pub(crate) fn status_text(status: &Status) -> String {
    let message = status.message();
    let code = code_name(status.code());
    if message.is_empty() {
        code.to_string()
    } else {
        format!("{message} ({code})")
    }
}

/// The URL for an address given as `host:port` or as a URL.
pub(crate) fn endpoint_uri(address: &str, tls: bool) -> String {
    if address.contains("://") {
        address.to_string()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// "cannot reach laredo at URL: reason", the reason taken from the innermost I/O error
/// when there is one.
fn unreachable_error(uri: &str, error: &(dyn StdError + 'static)) -> anyhow::Error {
    anyhow!("cannot reach laredo at {uri}: {}", transport_reason(error))
}

/// The most telling part of a transport error chain.
fn transport_reason(error: &(dyn StdError + 'static)) -> String {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    let mut innermost = error.to_string();
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::TimedOut
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable
                | K::NotConnected => io.kind().to_string(),
                _ => io.to_string(),
            };
        }
        innermost = err.to_string();
        current = err.source();
    }
    if innermost.contains("elapsed") || innermost.contains("timed out") {
        return "timed out".to_string();
    }
    innermost
}

/// The canonical upper-case name of a gRPC code.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CLI-17: the deadline belongs to each request, made when the request is, so a
    /// connection opened long ago still gives every call its full timeout.
    #[tokio::test]
    async fn every_request_carries_its_own_deadline_and_the_token() {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let conn = Connection {
            address: "http://127.0.0.1:1".into(),
            channel,
            authorization: Some(MetadataValue::from_static("Bearer t")),
            timeout: Duration::from_secs(3),
        };
        for _ in 0..2 {
            let request = conn.request(());
            assert_eq!(request.metadata().get("grpc-timeout").unwrap(), "3000000u");
            assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer t");
        }
        let stream = conn.stream_request(());
        assert!(stream.metadata().get("grpc-timeout").is_none());
        assert_eq!(stream.metadata().get("authorization").unwrap(), "Bearer t");
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        use clap::Parser;
        let cli = crate::Cli::parse_from(["laredo", "--token", "s3cret", "version"]);
        let debug = format!("{cli:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("Token(***)"), "{debug}");
        assert_eq!(cli.global.token.unwrap().expose(), "s3cret");
    }

    #[test]
    fn addresses_without_a_scheme_get_one() {
        assert_eq!(
            endpoint_uri("localhost:4001", false),
            "http://localhost:4001"
        );
        assert_eq!(endpoint_uri("h:1", true), "https://h:1");
        assert_eq!(endpoint_uri("http://h:1", true), "http://h:1");
    }

    #[test]
    fn statuses_print_message_and_code() {
        let status = Status::not_found("no pipeline serves table public.nope");
        assert_eq!(
            status_text(&status),
            "no pipeline serves table public.nope (NOT_FOUND)"
        );
        assert_eq!(status_text(&Status::internal("")), "INTERNAL");
    }

    #[test]
    fn a_refused_connection_is_named_in_plain_words() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = unreachable_error("http://127.0.0.1:1", &io);
        assert_eq!(
            error.to_string(),
            "cannot reach laredo at http://127.0.0.1:1: connection refused"
        );
    }
}
