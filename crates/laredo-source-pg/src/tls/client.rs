//! The rustls side of [`super`]: certificates and keys read from disk, a client
//! configuration whose server certificate verification follows the `sslmode`, and the
//! tokio-postgres connector on top of it (the replication connection's relay uses
//! [`handshake`] directly).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{SslMode, TlsError, TlsSettings};

/// The ALPN protocol name PostgreSQL 17+ expects (and requires for direct TLS).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The default certificate directory of libpq, `~/.postgresql`.
fn default_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql"))
}

/// Certificates and keys read from disk for one connection (read at every connect, so
/// rotated files are picked up).
struct Material {
    roots: Option<(PathBuf, RootCertStore)>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

async fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| TlsError::file(key, path, format!("cannot read: {e}")))
}

async fn exists(path: &Path) -> bool {
    tokio::fs::try_exists(path).await.unwrap_or(false)
}

async fn load_material(settings: &TlsSettings) -> Result<Material, TlsError> {
    let defaults = default_dir();
    let root_path = match (&settings.root_cert, &defaults) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(dir)) if exists(&dir.join("root.crt")).await => Some(dir.join("root.crt")),
        (None, dir) if settings.mode.verifies_chain() => {
            let shown = dir.as_ref().map_or_else(
                || "~/.postgresql/root.crt".to_string(),
                |d| d.join("root.crt").display().to_string(),
            );
            return Err(TlsError::Conflict(format!(
                "sslmode={} verifies the server certificate but no root certificate is given: \
                 set sslrootcert or provide {shown}",
                settings.mode
            )));
        }
        (None, _) => None,
    };
    let roots = match root_path {
        Some(path) => {
            let store = load_roots(&path).await?;
            Some((path, store))
        }
        None => None,
    };
    let cert_path = match (&settings.client_cert, &defaults) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(dir)) if exists(&dir.join("postgresql.crt")).await => {
            Some(dir.join("postgresql.crt"))
        }
        _ => None,
    };
    let identity = match cert_path {
        Some(cert_path) => {
            let key_path = match (&settings.client_key, &defaults) {
                (Some(path), _) => path.clone(),
                (None, Some(dir)) => dir.join("postgresql.key"),
                (None, None) => {
                    return Err(TlsError::Conflict(
                        "sslcert is set but sslkey is not".to_string(),
                    ));
                }
            };
            Some(load_identity(&cert_path, &key_path).await?)
        }
        None if settings.client_key.is_some() => {
            return Err(TlsError::Conflict(
                "sslkey is set but sslcert is not".to_string(),
            ));
        }
        None => None,
    };
    Ok(Material { roots, identity })
}

async fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read_file("sslrootcert", path).await?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| TlsError::file("sslrootcert", path, format!("not PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            TlsError::file("sslrootcert", path, format!("unusable certificate: {e}"))
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::file("sslrootcert", path, "holds no certificate"));
    }
    Ok(roots)
}

async fn load_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let pem = read_file("sslcert", cert_path).await?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file("sslcert", cert_path, format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::file("sslcert", cert_path, "holds no certificate"));
    }
    check_key_permissions(key_path).await?;
    let pem = read_file("sslkey", key_path).await?;
    if pem.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(TlsError::file(
            "sslkey",
            key_path,
            "is encrypted; laredo reads only unencrypted keys (sslpassword is not supported)",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError::file(
            "sslkey",
            key_path,
            format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"),
        )
    })?;
    Ok((chain, key))
}

/// libpq's rule: the key must not be readable by group or others, except a root-owned
/// key may be group-readable (for a group-shared secret).
async fn check_key_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| TlsError::file("sslkey", path, format!("cannot read: {e}")))?;
    let mode = meta.mode();
    let allowed = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if mode & allowed != 0 {
        return Err(TlsError::file(
            "sslkey",
            path,
            format!(
                "has group or world access (mode {:o}); permissions should be u=rw (0600) or less",
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// The rustls client configuration `settings` call for, with files read now.
///
/// # Errors
/// A file that cannot be read or parsed, or a root certificate missing for
/// `verify-ca`/`verify-full`.
pub(crate) async fn client_config(settings: &TlsSettings) -> Result<TlsClient, TlsError> {
    let material = load_material(settings).await?;
    let provider = provider();
    let context = match &material.roots {
        Some((path, _)) => format!("sslmode={}, sslrootcert={}", settings.mode, path.display()),
        None => format!("sslmode={}, no root certificate", settings.mode),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match material.roots {
        Some((_, roots)) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| TlsError::Conflict(format!("TLS configuration: {e}")))?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { inner: webpki })
            }
        }
        None => Arc::new(AnyCertificate {
            provider: Arc::clone(&provider),
        }),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match material.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = settings.sni;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(TlsClient {
        config: Arc::new(config),
        context: context.into(),
    })
}

/// A rustls client configuration and what it trusts, for error messages.
#[derive(Clone)]
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    /// `sslmode=..., sslrootcert=...`.
    context: Arc<str>,
}

/// `require` (and `prefer`/`allow`) without a root certificate: encryption without
/// authentication of the server, as libpq. The handshake signatures are still checked,
/// so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca` (and `require` with a root certificate): the chain must lead to a
/// trusted root; the name is not checked. webpki checks the chain before the name, so a
/// name error means the chain passed.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server name to check and send: an IP address or a DNS name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Conflict(format!("host {host:?} is not a valid TLS server name")))
}

/// Runs the TLS handshake on `stream` for `host`.
pub(crate) async fn handshake<S>(
    client: &TlsClient,
    host: &str,
    server: &str,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = server_name(host)?;
    TlsConnector::from(Arc::clone(&client.config))
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            server: server.to_string(),
            context: client.context.to_string(),
            source,
        })
}

/// tokio-postgres's TLS hook on rustls: `make_tls_connect` per host, then the handshake
/// after tokio-postgres's SSLRequest (tokio-postgres handles `prefer`'s fallback and
/// `require`'s refusal of a server without TLS).
#[derive(Clone)]
pub(crate) struct MakeRustlsConnect {
    /// `None`: plaintext only (`sslmode=disable`, Unix sockets).
    client: Option<TlsClient>,
}

impl MakeRustlsConnect {
    /// A connector on `client` (from [`client_config`]).
    pub(crate) fn new(client: TlsClient) -> Self {
        Self {
            client: Some(client),
        }
    }

    /// A connector that never starts TLS (one connection type for both cases).
    pub(crate) fn plaintext() -> Self {
        Self { client: None }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect {
            client: self.client.clone(),
            host: domain.to_string(),
        })
    }
}

/// One handshake for one host; see [`MakeRustlsConnect`].
pub(crate) struct RustlsConnect {
    client: Option<TlsClient>,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let client = self.client.ok_or_else(|| {
                TlsError::Conflict("TLS was started on a plaintext-only connection".to_string())
            })?;
            handshake(&client, &self.host, &self.host, stream)
                .await
                .map(RustlsStream)
        })
    }
}

/// A TLS stream for tokio-postgres.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM runs without channel binding, which
    /// `channel_binding=prefer` (the default) accepts; `channel_binding=require` fails.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
