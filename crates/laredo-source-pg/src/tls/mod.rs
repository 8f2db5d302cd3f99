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
//! What each mode checks is in [`SslMode`]'s docs, as libpq defines it.
//!
//! `require` and stricter never fall back to plaintext; `prefer` does only when the
//! server answers the TLS request with "no TLS here". Unlike libpq, a root certificate
//! or client certificate file that is named explicitly but cannot be read is an error in
//! every mode (libpq silently skips a missing one below `verify-ca`).
//!
//! The settings ([`split`], [`TlsSettings`]) live here; `client` builds the rustls
//! configuration they call for and the connectors on top of it.

mod client;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use tokio_rustls::rustls;

pub(crate) use self::client::{MakeRustlsConnect, RustlsStream, client_config, handshake};

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

/// libpq's `sslmode`: whether TLS is used and what it verifies.
///
/// What each mode checks (as libpq, see
/// <https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION>):
///
/// | `sslmode` | TLS | certificate chain | host name |
/// | --- | --- | --- | --- |
/// | `disable` | never | - | - |
/// | `allow` | only when the plaintext connection is refused (query connections) | as `require` | no |
/// | `prefer` (default) | when the server offers it, else plaintext | as `require` | no |
/// | `require` | always | only when a root certificate is given or `~/.postgresql/root.crt` exists | no |
/// | `verify-ca` | always | yes | no |
/// | `verify-full` | always | yes | yes (DNS name or IP address in the certificate's subjectAltName) |
///
/// `require` and stricter never fall back to plaintext; `prefer` does only when the
/// server answers the TLS request with "no TLS here".
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
    /// True when connecting again may succeed with the same settings: the server could
    /// not be reached, or the handshake broke off for a reason other than the
    /// certificates (a reset connection). A bad setting or file, a server without TLS
    /// under `require`, or a certificate that does not verify needs an operator.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Handshake { source, .. } => source
                .get_ref()
                .is_none_or(|cause| !cause.is::<rustls::Error>()),
            _ => false,
        }
    }

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
pub(crate) fn split(connection_string: &str) -> Result<(String, TlsSettings), TlsError> {
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

    #[test]
    fn only_an_unreachable_server_or_a_broken_off_handshake_is_retryable() {
        let server = || "db:5432".to_string();
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(
            TlsError::Io {
                server: server(),
                source: reset()
            }
            .is_retryable()
        );
        assert!(
            TlsError::Handshake {
                server: server(),
                context: "sslmode=require".to_string(),
                source: reset()
            }
            .is_retryable()
        );
        let untrusted = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("unknown issuer".to_string()),
        );
        assert!(
            !TlsError::Handshake {
                server: server(),
                context: "sslmode=verify-full".to_string(),
                source: untrusted
            }
            .is_retryable()
        );
        assert!(!TlsError::invalid("sslmode", "sometimes", SslMode::ACCEPTED).is_retryable());
    }
}
