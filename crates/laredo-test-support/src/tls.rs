//! Certificates made in the test: a CA, server and client certificates (rcgen), and a
//! throwaway cluster that serves TLS with them.
//!
//! [`TlsCluster::shared`] is the TLS counterpart of [`PgCluster::shared`]: one cluster
//! per test binary, `ssl = on` with a certificate for `localhost` and `127.0.0.1`
//! signed by a CA made for this run, plus the files a client needs (that CA, a second
//! unrelated CA, and a client certificate for the role [`TlsCluster::CERT_USER`], which
//! the server lets in by certificate only).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::pg::{PgCluster, PgError, ServerTls, write_private};

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority made for one test run.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn failed(what: &str, e: rcgen::Error) -> PgError {
    PgError::new(format!("cannot make {what}: {e}"))
}

impl TestCa {
    /// A new self-signed CA called `name`.
    ///
    /// # Errors
    /// When rcgen cannot make the key or certificate.
    pub fn new(name: &str) -> Result<Self, PgError> {
        let mut params = CertificateParams::new(Vec::new()).map_err(|e| failed("a CA", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| failed("a CA key", e))?;
        let cert = params.self_signed(&key).map_err(|e| failed("a CA", e))?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA's certificate (what a client puts in `sslrootcert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses, as subjectAltNames).
    ///
    /// # Errors
    /// When a name is not valid or rcgen fails.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, PgError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let mut params =
            CertificateParams::new(names).map_err(|e| failed("a server certificate", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "laredo test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, "a server certificate")
    }

    /// A client certificate for the PostgreSQL role `user` (its common name).
    ///
    /// # Errors
    /// When rcgen fails.
    pub fn issue_client(&self, user: &str) -> Result<Issued, PgError> {
        let mut params =
            CertificateParams::new(Vec::new()).map_err(|e| failed("a client certificate", e))?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, "a client certificate")
    }

    fn issue(&self, params: CertificateParams, what: &str) -> Result<Issued, PgError> {
        let key = KeyPair::generate().map_err(|e| failed(what, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed(what, e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A TLS test cluster and the client-side files for it; see the module docs.
#[derive(Debug)]
pub struct TlsCluster {
    cluster: PgCluster,
    dir: PathBuf,
}

impl TlsCluster {
    /// The role that logs in by client certificate only (`hostssl ... cert`).
    pub const CERT_USER: &'static str = "laredo_cert";

    /// Makes a CA, a server certificate for `localhost` and `127.0.0.1`, and starts a
    /// cluster with them. The client files are written to a directory of their own.
    ///
    /// # Errors
    /// As [`PgCluster::start_tls`], or when a certificate or file cannot be made.
    pub fn start() -> Result<Self, PgError> {
        let ca = TestCa::new("laredo test CA")?;
        let other_ca = TestCa::new("laredo unrelated CA")?;
        let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
        let client = ca.issue_client(Self::CERT_USER)?;
        let cluster = PgCluster::start_tls(&ServerTls {
            cert_pem: server.cert_pem,
            key_pem: server.key_pem,
            client_certificates: Some((ca.cert_pem().to_string(), Self::CERT_USER.to_string())),
        })?;
        cluster.psql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN SUPERUSER REPLICATION",
                Self::CERT_USER
            ),
        )?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Inside the cluster's directory, so the watchdog removes it with the cluster.
        let dir = cluster.root().join(format!("client-{stamp}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| PgError::new(format!("cannot create {}: {e}", dir.display())))?;
        write_private(&dir.join("ca.pem"), ca.cert_pem())?;
        write_private(&dir.join("other_ca.pem"), other_ca.cert_pem())?;
        write_private(&dir.join("client.crt"), &client.cert_pem)?;
        write_private(&dir.join("client.key"), &client.key_pem)?;
        Ok(Self { cluster, dir })
    }

    /// The TLS cluster shared by every test of this test binary (started on first use).
    ///
    /// # Panics
    /// When the cluster cannot start.
    pub fn shared() -> &'static TlsCluster {
        static SHARED: OnceLock<TlsCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            TlsCluster::start()
                .unwrap_or_else(|e| panic!("cannot start the TLS test PostgreSQL: {e}"))
        })
    }

    /// The cluster.
    pub fn cluster(&self) -> &PgCluster {
        &self.cluster
    }

    /// The CA that signed the server's certificate, as a PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that signed nothing the server has, as a PEM file.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other_ca.pem")
    }

    /// The client certificate for [`Self::CERT_USER`].
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The client certificate's key (mode 0600).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The directory of the client files.
    pub fn client_dir(&self) -> &Path {
        &self.dir
    }
}
