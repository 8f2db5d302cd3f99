//! TLS from PEM files, checked at startup so that every problem names its file.
//!
//! The original silently served plaintext when the files failed to load; here any
//! failure is a configuration error and the server does not start.

use std::path::{Path, PathBuf};

use laredo_core::ConfigError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// The certificate chain and key files.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
}

/// Reads and checks both files, then configures `server` with them. Every problem is
/// pushed to `errors`.
pub(crate) async fn configure(
    server: Server,
    files: &TlsFiles,
    errors: &mut Vec<ConfigError>,
) -> Option<Server> {
    let cert = read_pem(&files.cert_path, "tls.cert_path", errors).await;
    let key = read_pem(&files.key_path, "tls.key_path", errors).await;
    let cert = cert.filter(|pem| check_certificates(pem, &files.cert_path, errors));
    let key = key.filter(|pem| check_key(pem, &files.key_path, errors));
    let (cert, key) = (cert?, key?);
    // rustls checks here that the key belongs to the certificate.
    match server.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key))) {
        Ok(server) => Some(server),
        Err(e) => {
            errors.push(ConfigError::at(
                "tls",
                format!(
                    "certificate {} and key {} are not a usable pair: {}",
                    quoted(&files.cert_path),
                    quoted(&files.key_path),
                    chain(&e)
                ),
            ));
            None
        }
    }
}

async fn read_pem(path: &Path, key: &str, errors: &mut Vec<ConfigError>) -> Option<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(ConfigError::at(
                key,
                format!("cannot read {}: {e}", quoted(path)),
            ));
            None
        }
    }
}

fn check_certificates(pem: &[u8], path: &Path, errors: &mut Vec<ConfigError>) -> bool {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        if let Err(e) = cert {
            errors.push(ConfigError::at(
                "tls.cert_path",
                format!("{} is not valid PEM: {e}", quoted(path)),
            ));
            return false;
        }
        count += 1;
    }
    if count == 0 {
        errors.push(ConfigError::at(
            "tls.cert_path",
            format!("{} holds no PEM certificate", quoted(path)),
        ));
    }
    count > 0
}

fn check_key(pem: &[u8], path: &Path, errors: &mut Vec<ConfigError>) -> bool {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(_) => true,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            errors.push(ConfigError::at(
                "tls.key_path",
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    quoted(path)
                ),
            ));
            false
        }
        Err(e) => {
            errors.push(ConfigError::at(
                "tls.key_path",
                format!("{} is not valid PEM: {e}", quoted(path)),
            ));
            false
        }
    }
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// `error: cause: cause`: tonic's transport error says only "transport error".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
