//! A throwaway PostgreSQL cluster for tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory, configures it for
//! logical replication (`wal_level=logical`, replication slots and walsenders) and
//! speed (`fsync=off`: only the server process ever crashes in tests, never the OS, so
//! committed data survives a `-m immediate` stop; `synchronous_commit` stays on for
//! that reason), and starts it on a free loopback port. When the process runs as root,
//! the cluster runs as the `postgres` user (initdb refuses root).
//!
//! Cleanup does not depend on `Drop`: a watchdog shell process waits for the test
//! process to exit and then stops the server (`-m immediate`) and deletes the directory.
//! Tests therefore never leak a server, even when they panic or are killed, and a
//! cluster kept in a `static` (one per test binary) is cleaned up too.
//!
//! The server binaries come from `LAREDO_PG_BIN` when set, else the newest
//! `/usr/lib/postgresql/<version>/bin` (`cargo xtask deps` installs PostgreSQL 15).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A failure to set up or drive the test cluster.
#[derive(Debug)]
pub struct PgError(String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

impl PgError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

fn err(message: impl Into<String>) -> PgError {
    PgError(message.into())
}

/// Finds the PostgreSQL server binaries: `LAREDO_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` with an `initdb`.
pub fn find_pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LAREDO_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// TLS for a test cluster ([`PgCluster::start_tls`]): PEM texts, typically from a
/// [`TestCa`](crate::TestCa).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server certificate (chain).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// A CA's certificate and a role name: the server then accepts certificates from
    /// that CA and requires one (`hostssl ... cert`) for that role, over TLS only.
    pub client_certificates: Option<(String, String)>,
}

fn append(path: &Path, text: &str) -> Result<(), PgError> {
    let mut current = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    current.push_str(text);
    std::fs::write(path, current).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// Writes `text` to a new file only its owner may read (0600).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), PgError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// A running throwaway cluster; see the module docs.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    next_db: AtomicU64,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn postgres_ids() -> Result<(u32, u32), PgError> {
    let id = |flag: &str| -> Result<u32, PgError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| err(format!("cannot run id: {e}")))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| err("running as root needs a `postgres` user to run the server (install postgresql)"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> Result<u16, PgError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free loopback port: {e}")))
}

impl PgCluster {
    /// Creates and starts a cluster. Blocks for the second or two initdb and startup take.
    ///
    /// # Errors
    /// When PostgreSQL is not installed, or initdb or the server fails (the message
    /// includes the server log).
    pub fn start() -> Result<Self, PgError> {
        Self::start_with(None)
    }

    /// Creates and starts a cluster with `ssl = on` and `tls`'s certificate (see
    /// [`ServerTls`]); plaintext connections stay allowed, so the same cluster serves
    /// every `sslmode`.
    ///
    /// # Errors
    /// As [`PgCluster::start`], and when the certificate files cannot be written.
    pub fn start_tls(tls: &ServerTls) -> Result<Self, PgError> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls>) -> Result<Self, PgError> {
        let bin = find_pg_bin().ok_or_else(|| {
            err("PostgreSQL server binaries not found: run `cargo xtask deps` or set LAREDO_PG_BIN")
        })?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!("laredo-pg-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&root)
            .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
        let as_postgres = is_root();
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|e| err(format!("cannot chown {}: {e}", root.display())))?;
        }
        let cluster = Self {
            root,
            bin,
            port: free_port()?,
            as_postgres,
            next_db: AtomicU64::new(0),
        };
        cluster.spawn_watchdog()?;
        cluster.initdb()?;
        if let Some(tls) = tls {
            cluster.configure_tls(tls)?;
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// The cluster shared by every test of this test binary (started on first use).
    ///
    /// # Panics
    /// When the cluster cannot start.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            PgCluster::start().unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"))
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A command for a server binary, run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, what: &str, command: &mut Command) -> Result<String, PgError> {
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run {what}: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(err(format!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            )))
        }
    }

    fn log_tail(&self) -> String {
        std::fs::read_to_string(self.log_file())
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "\nserver log (tail):\n{}",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                )
            })
            .unwrap_or_default()
    }

    /// Stops the server and removes the directory once this process is gone.
    fn spawn_watchdog(&self) -> Result<(), PgError> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            )
        } else {
            format!(
                "'{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            root = self.root.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| err(format!("cannot start the cleanup watchdog: {e}")))
    }

    fn initdb(&self) -> Result<(), PgError> {
        self.run(
            "initdb",
            self.server_command("initdb")
                .arg("-D")
                .arg(self.data_dir())
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]),
        )?;
        let config = format!(
            "\n# laredo test cluster\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{socket}'\n\
             wal_level = logical\nmax_replication_slots = 32\nmax_wal_senders = 32\nfsync = off\n\
             full_page_writes = off\nmax_connections = 200\n",
            port = self.port,
            socket = self.root.display()
        );
        append(&self.data_dir().join("postgresql.conf"), &config)
    }

    /// Writes the server's certificate files into the data directory (owned by the
    /// server's user, the key 0600 as the server insists) and turns TLS on.
    fn configure_tls(&self, tls: &ServerTls) -> Result<(), PgError> {
        let data = self.data_dir();
        let mut files = vec![
            ("server.crt", tls.cert_pem.as_str()),
            ("server.key", tls.key_pem.as_str()),
        ];
        let mut config =
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_string();
        if let Some((ca_pem, _)) = &tls.client_certificates {
            files.push(("client_ca.crt", ca_pem.as_str()));
            config.push_str("ssl_ca_file = 'client_ca.crt'\n");
        }
        let owner = if self.as_postgres {
            Some(postgres_ids()?)
        } else {
            None
        };
        for (name, pem) in files {
            let path = data.join(name);
            write_private(&path, pem)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| err(format!("cannot chown {}: {e}", path.display())))?;
            }
        }
        append(&data.join("postgresql.conf"), &config)?;
        if let Some((_, user)) = &tls.client_certificates {
            // pg_hba.conf is read top down: the certificate lines go before initdb's trust lines.
            let path = data.join("pg_hba.conf");
            let current = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            let lines = format!(
                "hostssl all {user} 127.0.0.1/32 cert\nhostssl replication {user} 127.0.0.1/32 cert\n\
                 host all {user} 127.0.0.1/32 reject\nhost replication {user} 127.0.0.1/32 reject\n"
            );
            std::fs::write(&path, lines + &current)
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(())
    }

    fn start_server(&self) -> Result<(), PgError> {
        self.run(
            "pg_ctl start",
            self.server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "start"]),
        )
        .map(drop)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of one of the server's client programs (`psql`, `pg_recvlogical`,
    /// `pgbench`, ...), which connect with [`PgCluster::connection_string`].
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// A libpq URI for database `db`.
    pub fn connection_string(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL in `db` with psql and returns the unaligned, tuples-only output.
    ///
    /// # Errors
    /// When the statement fails (the message carries psql's error).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, PgError> {
        let psql = self.bin.join("psql");
        self.run(
            "psql",
            Command::new(psql)
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", db, "-c", sql]),
        )
        .map(|out| out.trim_end().to_string())
    }

    /// Creates a new, uniquely named database and returns its name.
    ///
    /// # Errors
    /// When the database cannot be created.
    pub fn create_database(&self, prefix: &str) -> Result<String, PgError> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(name)
    }

    /// Terminates every walsender (replication connection); returns how many.
    ///
    /// # Errors
    /// When the query fails.
    pub fn terminate_walsenders(&self) -> Result<u64, PgError> {
        let out = self.psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'walsender'",
        )?;
        out.trim()
            .parse()
            .map_err(|_| err(format!("unexpected count {out:?}")))
    }

    /// Stops the server the hard way (`-m immediate`, as a crash).
    ///
    /// # Errors
    /// When pg_ctl fails.
    pub fn stop_immediate(&self) -> Result<(), PgError> {
        self.run(
            "pg_ctl stop",
            self.server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]),
        )
        .map(drop)
    }

    /// Starts the server again after [`PgCluster::stop_immediate`] (crash recovery).
    ///
    /// # Errors
    /// When the server does not come up.
    pub fn start_again(&self) -> Result<(), PgError> {
        self.start_server()
    }

    /// Crashes and restarts the server.
    ///
    /// # Errors
    /// As [`PgCluster::stop_immediate`] and [`PgCluster::start_again`].
    pub fn restart(&self) -> Result<(), PgError> {
        self.stop_immediate()?;
        self.start_again()
    }

    /// Polls `sql` until its output equals `expected` or `timeout` passes; returns
    /// whether it did.
    pub fn wait_for_value(&self, db: &str, sql: &str, expected: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.psql(db, sql).is_ok_and(|out| out == expected) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cluster's directory (data, log, socket).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
