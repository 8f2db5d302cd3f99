//! TLS to PostgreSQL, with libpq's `sslmode` semantics, on rustls (aws-lc-rs provider).
//!
//! The `ssl*` keys of a connection string are read here, not by tokio-postgres (whose
//! parser knows only `disable`/`prefer`/`require` and no certificate files): [`split`]
//! takes them out of a URI (`?sslmode=verify-full&sslrootcert=/ca.pem`) or a
//! `key=value` string and hands the rest on. The same [`TlsSettings`] then drive both
//! connections of the source:
//!
//! - the query connections (tokio-postgres) through [`MakeRustlsConnect`], a small
//!   `MakeTlsConnect` on tokio-rustls;
//! - the replication connection (pgwire-replication) through [`crate::relay`], because
//!   pgwire-replication's own TLS feature hard-wires the `ring` provider.
//!
//! What each mode checks (as libpq, see
//! <https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION>):
//!
//! | `sslmode` | TLS | certificate chain | host name |
//! | --- | --- | --- | --- |
//! | `disable` | never | - | - |
//! | `allow` | only when the plaintext connection is refused (query connections) | as `require` | no |
//! | `prefer` (default) | when the server offers it, else plaintext | as `require` | no |
//! | `require` | always | only when a root certificate is given or `~/.postgresql/root.crt` exists | no |
//! | `verify-ca` | always | yes | no |
//! | `verify-full` | always | yes | yes (DNS name or IP address in the certificate's subjectAltName) |
//!
//! `require` and stricter never fall back to plaintext; `prefer` does only when the
//! server answers the TLS request with "no TLS here". Unlike libpq, a root certificate
//! or client certificate file that is named explicitly but cannot be read is an error in
//! every mode (libpq silently skips a missing one below `verify-ca`).

use std::fmt;
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

/// The ALPN protocol name PostgreSQL 17+ expects (and requires for direct TLS).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The connection-string keys laredo reads itself.
const SSL_KEYS: [&str; 7] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslsni",
    "sslnegotiation",
];

/// libpq TLS keys laredo does not implement: refused rather than ignored, since each
/// tightens security and silently dropping it would weaken the connection.
const UNSUPPORTED_KEYS: [&str; 6] = [
    "sslcrl",
    "sslcrldir",
    "sslcertmode",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requirepeer",
];

/// libpq's `sslmode`: whether TLS is used and what it verifies (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS (unverified unless a root certificate is set) when the
    /// plaintext connection is refused.
    Allow,
    /// TLS when the server offers it, else plaintext. libpq's default, and laredo's.
    #[default]
    Prefer,
    /// Always TLS; the chain is verified only when a root certificate is available.
    Require,
    /// Always TLS; the server certificate must chain to the root certificate.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    const ACCEPTED: &'static str = "disable, allow, prefer, require, verify-ca, verify-full";

    fn parse(value: &str) -> Result<Self, TlsError> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return Err(TlsError::invalid("sslmode", value, Self::ACCEPTED)),
        })
    }

    /// The connection-string spelling (`verify-full`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    fn verifies_chain(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libpq's `sslnegotiation`: how the TLS handshake starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslNegotiation {
    /// Ask first with PostgreSQL's SSLRequest message (every server version).
    #[default]
    Postgres,
    /// Start the TLS handshake right away (PostgreSQL 17 and later; saves a round
    /// trip). Needs `sslmode=require` or stricter.
    Direct,
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of trusted root certificates. Unset: the chain is
    /// verified against `~/.postgresql/root.crt` when it exists (and `verify-ca` /
    /// `verify-full` fail when it does not).
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: PEM client certificate (chain). Unset: `~/.postgresql/postgresql.crt`
    /// when it exists.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: PEM private key of the client certificate (PKCS#8, PKCS#1 or SEC1,
    /// unencrypted, no group or other access). Unset: `~/.postgresql/postgresql.key`.
    pub client_key: Option<PathBuf>,
    /// `sslsni`: send the host name in the handshake (default on; never for IPs).
    pub sni: bool,
    /// `sslnegotiation`.
    pub negotiation: SslNegotiation,
}

impl TlsSettings {
    /// No TLS at all.
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            sni: true,
            ..Self::default()
        }
    }
}

/// A TLS setting or handshake failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A connection-string key has a value laredo does not accept.
    #[error("invalid value {value:?} for {key}: expected one of {accepted}")]
    InvalidValue {
        /// The key (`sslmode`).
        key: &'static str,
        /// The value given.
        value: String,
        /// The accepted values.
        accepted: &'static str,
    },
    /// A libpq TLS key laredo does not implement.
    #[error("{key} is not supported by laredo (supported TLS keys: {})", SSL_KEYS.join(", "))]
    UnsupportedKey {
        /// The key.
        key: String,
    },
    /// The settings contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// A certificate or key file cannot be used.
    #[error("{key} {path:?}: {problem}")]
    File {
        /// The key that names the file (`sslrootcert`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The server does not accept TLS, and the mode does not allow plaintext.
    #[error(
        "the server at {server} does not accept TLS, and sslmode={mode} never falls back to plaintext"
    )]
    NotOffered {
        /// `host:port`.
        server: String,
        /// The mode in force.
        mode: SslMode,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch, ...).
    #[error("TLS handshake with {server} failed ({context})")]
    Handshake {
        /// `host:port` or the host name checked.
        server: String,
        /// The mode and the root certificate in force (`sslmode=verify-full,
        /// sslrootcert=/etc/ca.pem`).
        context: String,
        /// The cause (rustls names the certificate problem).
        #[source]
        source: io::Error,
    },
    /// Connecting the TCP socket or talking on it failed.
    #[error("cannot reach {server}")]
    Io {
        /// `host:port`.
        server: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    fn invalid(key: &'static str, value: &str, accepted: &'static str) -> Self {
        Self::InvalidValue {
            key,
            value: value.to_string(),
            accepted,
        }
    }

    fn file(key: &'static str, path: &Path, problem: impl Into<String>) -> Self {
        Self::File {
            key,
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// Splits the TLS keys off `connection_string` (URI or `key=value` form): the string
/// without them, for tokio-postgres, and the settings they make.
///
/// # Errors
/// A TLS key with a bad value (the message names the key and the accepted values), an
/// unsupported TLS key, or a string whose structure cannot be read.
pub fn split(connection_string: &str) -> Result<(String, TlsSettings), TlsError> {
    let trimmed = connection_string.trim_start();
    let (rest, pairs) =
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            split_uri(trimmed)?
        } else {
            split_key_value(connection_string)?
        };
    Ok((rest, settings_from(&pairs)?))
}

fn settings_from(pairs: &[(String, String)]) -> Result<TlsSettings, TlsError> {
    let mut settings = TlsSettings {
        sni: true,
        ..TlsSettings::default()
    };
    // As libpq, the last occurrence of a key wins.
    for (key, value) in pairs {
        let path = || (!value.is_empty()).then(|| PathBuf::from(value));
        match key.as_str() {
            "sslmode" => settings.mode = SslMode::parse(value)?,
            "sslrootcert" => {
                if value == "system" {
                    return Err(TlsError::invalid(
                        "sslrootcert",
                        value,
                        "a path to a PEM file (\"system\" is not supported)",
                    ));
                }
                settings.root_cert = path();
            }
            "sslcert" => settings.client_cert = path(),
            "sslkey" => settings.client_key = path(),
            // Only used to decrypt an encrypted key, which is refused when loaded.
            "sslpassword" => {}
            "sslsni" => {
                settings.sni = match value.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(TlsError::invalid("sslsni", value, "0, 1")),
                }
            }
            "sslnegotiation" => {
                settings.negotiation = match value.as_str() {
                    "postgres" => SslNegotiation::Postgres,
                    "direct" => SslNegotiation::Direct,
                    _ => {
                        return Err(TlsError::invalid(
                            "sslnegotiation",
                            value,
                            "postgres, direct",
                        ));
                    }
                }
            }
            other => {
                return Err(TlsError::UnsupportedKey {
                    key: other.to_string(),
                });
            }
        }
    }
    if settings.negotiation == SslNegotiation::Direct && !settings.mode.requires_tls() {
        return Err(TlsError::Conflict(format!(
            "sslnegotiation=direct needs sslmode=require, verify-ca or verify-full (got sslmode={})",
            settings.mode
        )));
    }
    Ok(settings)
}

fn is_tls_key(key: &str) -> bool {
    SSL_KEYS.contains(&key) || UNSUPPORTED_KEYS.contains(&key)
}

/// The URI form: the TLS keys leave the query string, everything else stays verbatim.
fn split_uri(uri: &str) -> Result<(String, Vec<(String, String)>), TlsError> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut pairs = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = percent_decode(key)?;
        if is_tls_key(&key) {
            pairs.push((key, percent_decode(value)?));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, pairs))
}

fn percent_decode(text: &str) -> Result<String, TlsError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%' {
            let byte = text
                .get(idx + 1..idx + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    TlsError::Conflict(format!(
                        "invalid percent-encoding in URI parameter {text:?}"
                    ))
                })?;
            out.push(byte);
            idx += 3;
        } else {
            out.push(bytes[idx]);
            idx += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| TlsError::Conflict(format!("URI parameter {text:?} is not UTF-8")))
}

/// The `key=value` form, tokenised as tokio-postgres (and libpq) do: optional spaces
/// around `=`, values bare or single-quoted, backslash escapes in both. The rest is
/// written back with every value quoted.
fn split_key_value(text: &str) -> Result<(String, Vec<(String, String)>), TlsError> {
    let mut chars = text.chars().peekable();
    let mut kept = Vec::new();
    let mut pairs = Vec::new();
    let malformed = |what: &str| TlsError::Conflict(format!("malformed connection string: {what}"));
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(malformed("a value without a key"));
            }
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(malformed(&format!("expected `=` after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(malformed(&format!("unterminated quoted value of {key:?}")));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if is_tls_key(&key) {
            pairs.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), pairs))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn a_uri_keeps_its_other_parameters_verbatim() {
        let (rest, settings) = split(
            "postgresql://u:p%40ss@db.example.com:5433/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p%40ss@db.example.com:5433/app?application_name=x&connect_timeout=5"
        );
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(settings.sni);
        assert_eq!(
            split("postgres://u@h/db?sslmode=require").unwrap().0,
            "postgres://u@h/db"
        );
        assert_eq!(split("postgres://u@h/db").unwrap().1.mode, SslMode::Prefer);
    }

    #[test]
    fn key_value_strings_are_tokenised_like_libpq() {
        let (rest, settings) = split(
            "host=h  user = 'o\\'brien' password='a b\\\\c' sslmode =verify-ca sslcert='/c d.pem' sslkey=/k.pem sslsni=0",
        )
        .unwrap();
        assert_eq!(rest, "host='h' user='o\\'brien' password='a b\\\\c'");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("o'brien"));
        assert_eq!(config.get_password(), Some(&b"a b\\c"[..]));
        assert_eq!(settings.mode, SslMode::VerifyCa);
        assert_eq!(settings.client_cert, Some(PathBuf::from("/c d.pem")));
        assert_eq!(settings.client_key, Some(PathBuf::from("/k.pem")));
        assert!(!settings.sni);
    }

    #[test]
    fn bad_values_name_the_key_and_the_accepted_values() {
        let err = split("postgres://u@h/db?sslmode=verify_full").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"verify_full\" for sslmode: expected one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        let err = split("host=h sslnegotiation=fast").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"fast\" for sslnegotiation: expected one of postgres, direct"
        );
        let err = split("host=h sslcrl=/crl.pem").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sslcrl is not supported by laredo"),
            "{err}"
        );
        let err = split("host=h sslmode=prefer sslnegotiation=direct").unwrap_err();
        assert!(
            err.to_string()
                .contains("sslnegotiation=direct needs sslmode=require"),
            "{err}"
        );
        assert!(split("host=h user='x").is_err());
    }

    #[test]
    fn the_last_occurrence_wins() {
        let settings = settings_from(&pairs(&[("sslmode", "disable"), ("sslmode", "require")]));
        assert_eq!(settings.unwrap().mode, SslMode::Require);
    }

    #[test]
    fn require_demands_tls_and_prefer_does_not() {
        assert!(SslMode::Require.requires_tls());
        assert!(SslMode::VerifyFull.requires_tls());
        assert!(!SslMode::Prefer.requires_tls());
        assert!(!SslMode::Allow.requires_tls());
    }
}
