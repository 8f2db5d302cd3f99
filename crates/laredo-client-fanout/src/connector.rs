//! [`Connector`]: the endpoints as tonic [`Endpoint`]s (TLS configured once, when the
//! client is created) and the bearer token every call carries.
//!
//! Configuration problems (an unreadable CA or token file, a plaintext endpoint with TLS
//! options, a token the server could never accept) are [`ClientError::Options`] from
//! [`FanoutClient::new`](crate::FanoutClient::new), not failures found later while
//! retrying. A token file is read again on every attempt, so a rotated token is used
//! without a restart.

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;
use crate::failure::{SessionError, SessionErrorKind, chain};
use crate::options::{ClientOptions, TokenSource};

/// How long a connection (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoints and the token.
#[derive(Debug)]
pub(crate) struct Connector {
    endpoints: Vec<(String, Endpoint)>,
    token: Option<Token>,
}

#[derive(Debug)]
enum Token {
    /// Checked once; a sensitive header value (never indexed by HPACK, `Sensitive` in
    /// `Debug`).
    Value(MetadataValue<Ascii>),
    File(std::path::PathBuf),
}

impl Connector {
    /// # Errors
    /// [`ClientError::Options`] naming the option at fault.
    pub(crate) fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        #[cfg(feature = "tls")]
        let tls = tls::config(options)?;
        let mut endpoints = Vec::new();
        for url in options.endpoint_urls() {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| ClientError::Options(format!("bad address {url}: {e}")))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            let https = url.starts_with("https://");
            #[cfg(feature = "tls")]
            let endpoint = match (&tls, https) {
                (Some(tls), true) => endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| ClientError::Options(format!("TLS for {url}: {}", chain(&e))))?,
                (None, true) => {
                    return Err(ClientError::Options(format!(
                        "{url} needs a CA to verify the server with: set tls_ca_file or \
                         tls_ca_pem (operating-system roots are not used)"
                    )));
                }
                (Some(_), false) => {
                    return Err(ClientError::Options(format!(
                        "{url} is plaintext but TLS options are set: use https://"
                    )));
                }
                (None, false) => endpoint,
            };
            #[cfg(not(feature = "tls"))]
            if https {
                return Err(ClientError::Options(format!(
                    "{url} needs TLS: build laredo-client-fanout with the `tls` feature"
                )));
            }
            endpoints.push((url, endpoint));
        }
        let token = match &options.token {
            None => None,
            Some(TokenSource::Value(token)) => Some(Token::Value(
                bearer(token).map_err(|e| ClientError::Options(format!("token: {e}")))?,
            )),
            Some(TokenSource::File(path)) => {
                read_token_file(path).map_err(ClientError::Options)?;
                Some(Token::File(path.clone()))
            }
        };
        Ok(Self { endpoints, token })
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The URL of endpoint `idx` (modulo the number of endpoints).
    pub(crate) fn url(&self, idx: usize) -> &str {
        &self.endpoints[idx % self.endpoints.len()].0
    }

    /// Connects to endpoint `idx` (modulo the number of endpoints).
    pub(crate) async fn connect(&self, idx: usize) -> Result<Channel, SessionError> {
        let (url, endpoint) = &self.endpoints[idx % self.endpoints.len()];
        endpoint.connect().await.map_err(|e| {
            SessionError::new(
                url.as_str(),
                SessionErrorKind::Connect,
                format!("cannot connect: {}", chain(&e)),
            )
        })
    }

    /// The `authorization` value to send, when there is a token; a token file is read
    /// now.
    pub(crate) async fn authorization(
        &self,
        url: &str,
    ) -> Result<Option<MetadataValue<Ascii>>, SessionError> {
        match &self.token {
            None => Ok(None),
            Some(Token::Value(value)) => Ok(Some(value.clone())),
            Some(Token::File(path)) => {
                let path = path.clone();
                // File I/O stays off the runtime's threads.
                let read = tokio::task::spawn_blocking(move || read_token_file(&path)).await;
                match read {
                    Ok(Ok(value)) => Ok(Some(value)),
                    Ok(Err(message)) => {
                        Err(SessionError::new(url, SessionErrorKind::TokenFile, message))
                    }
                    Err(e) => Err(SessionError::new(
                        url,
                        SessionErrorKind::TokenFile,
                        format!("reading the token file failed: {e}"),
                    )),
                }
            }
        }
    }
}

/// `Bearer <token>` as a sensitive header value. The token must be visible ASCII
/// without spaces, as the server requires.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    if token.is_empty() {
        return Err("must not be empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII without spaces".into());
    }
    let mut value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "must be visible ASCII without spaces".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The token in `path`, surrounding whitespace trimmed. Errors name the file, never
/// the content.
fn read_token_file(path: &Path) -> Result<MetadataValue<Ascii>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("token_file: cannot read {:?}: {e}", path.display()))?;
    bearer(text.trim()).map_err(|e| format!("token_file: the token in {:?} {e}", path.display()))
}

#[cfg(feature = "tls")]
mod tls {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tonic::transport::{Certificate, ClientTlsConfig};

    use crate::ClientError;
    use crate::options::{CaSource, ClientOptions};

    /// The TLS configuration, when TLS options are set.
    pub(super) fn config(options: &ClientOptions) -> Result<Option<ClientTlsConfig>, ClientError> {
        if !options.tls.is_set() {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        match &options.tls.ca {
            Some(CaSource::Pem(pem)) => {
                check_certificates(pem, "tls_ca_pem: the PEM data")?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            Some(CaSource::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ClientError::Options(format!(
                        "tls_ca_file: cannot read {:?}: {e}",
                        path.display()
                    ))
                })?;
                check_certificates(&pem, &format!("tls_ca_file: {:?}", path.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => {
                return Err(ClientError::Options(
                    "tls_server_name is set but no CA: set tls_ca_file or tls_ca_pem \
                     (operating-system roots are not used)"
                        .into(),
                ));
            }
        }
        if let Some(name) = &options.tls.server_name {
            if name.is_empty() {
                return Err(ClientError::Options(
                    "tls_server_name: must not be empty".into(),
                ));
            }
            config = config.domain_name(name.clone());
        }
        Ok(Some(config))
    }

    /// At least one certificate and nothing that is not valid PEM.
    fn check_certificates(pem: &[u8], what: &str) -> Result<(), ClientError> {
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            cert.map_err(|e| ClientError::Options(format!("{what} is not valid PEM: {e}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(ClientError::Options(format!(
                "{what} holds no PEM certificate"
            )));
        }
        Ok(())
    }
}
