//! Real bosun clusters on loopback for tests: a thin driver of `scripts/cluster.sh`, so a
//! test's cluster has the layout a person gets (configs, pid and log files, `env`), and
//! what a test does can be redone by hand.
//!
//! Every cluster gets its own loopback /24 (`127.X.Y.11-13`), so tests run in parallel
//! without port clashes. Dropping a [`Cluster`] stops every process it started.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bosun_api::etcd::kv_client::KvClient;
use bosun_api::etcd::maintenance_client::MaintenanceClient;
use bosun_api::etcd::StatusRequest;
use bosun_pki::TlsMaterial;
use tonic::transport::Channel;

static NEXT: AtomicU32 = AtomicU32::new(1);

/// Result of the testkit: errors are strings that say what failed.
pub type Result<T> = std::result::Result<T, String>;

/// A running local cluster.
pub struct Cluster {
    /// Cluster directory (kept when the test fails? no: removed on drop).
    pub dir: tempfile::TempDir,
    /// First three octets of the servers' addresses.
    pub ip_base: String,
    bin: PathBuf,
    script: PathBuf,
}

/// The repository root, found at run time: the nearest directory above the test's package
/// (cargo sets `CARGO_MANIFEST_DIR` when it runs tests, and runs them there) that holds
/// `scripts/cluster.sh`. Not `env!`: with a build cache shared between checkouts, a path
/// baked in at compile time can name another checkout.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    start
        .ancestors()
        .find(|d| d.join("scripts/cluster.sh").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

impl Cluster {
    /// Starts `servers` servers with the `bosun` binary at `bin`; extra arguments go to
    /// `cluster.sh up` (e.g. `--snapshot-every 50`). Returns once a leader is elected.
    ///
    /// # Errors
    /// When the script fails; its output is in the error.
    pub fn up(bin: &Path, servers: usize, extra: &[&str]) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip_base = format!("127.{}.{}", 100 + std::process::id() % 100, n % 250);
        let dir = tempfile::Builder::new()
            .prefix("bosun-test-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let c = Cluster {
            dir,
            ip_base,
            bin: bin.to_path_buf(),
            script: repo_root().join("scripts/cluster.sh"),
        };
        let servers = servers.to_string();
        let mut args = vec!["up", "--servers", &servers, "--ip-base", &c.ip_base];
        args.extend_from_slice(extra);
        c.ctl(&args)?;
        Ok(c)
    }

    /// Runs `cluster.sh ARGS --dir DIR`; fails unless it exits 0.
    ///
    /// # Errors
    /// Non-zero exit, with the output.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .env("BOSUN_BIN", &self.bin)
            .output()
            .map_err(|e| format!("running cluster.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cluster.sh {args:?} failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out)
    }

    /// `sN`'s IP address.
    pub fn ip(&self, name: &str) -> String {
        let i: u32 = name.trim_start_matches('s').parse().unwrap_or(0);
        format!("{}.{}", self.ip_base, 10 + i)
    }

    /// `sN`'s client endpoint (`ip:2379`).
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}:2379", self.ip(name))
    }

    /// The admin user's TLS files.
    pub fn admin_tls(&self) -> TlsMaterial {
        let p = self.dir.path().join("pki");
        TlsMaterial {
            ca: p.join("ca.crt"),
            cert: p.join("users/admin.crt"),
            key: p.join("users/admin.key"),
        }
    }

    /// The PKI directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A channel to `sN`'s client port with the given identity.
    ///
    /// # Errors
    /// Unusable TLS files.
    pub fn channel_as(&self, name: &str, tls: &TlsMaterial) -> Result<Channel> {
        let cfg = bosun_pki::client_config(tls).map_err(|e| e.to_string())?;
        bosun_pki::channel(&self.endpoint(name), cfg).map_err(|e| e.to_string())
    }

    /// An etcd KV client to `sN` as admin.
    ///
    /// # Errors
    /// Unusable TLS files.
    pub fn kv(&self, name: &str) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.channel_as(name, &self.admin_tls())?))
    }

    /// Maintenance client to `sN` as admin.
    ///
    /// # Errors
    /// Unusable TLS files.
    pub fn maintenance(&self, name: &str) -> Result<MaintenanceClient<Channel>> {
        Ok(MaintenanceClient::new(
            self.channel_as(name, &self.admin_tls())?,
        ))
    }

    /// The leader's name, as the reachable servers report it.
    pub async fn leader(&self, names: &[&str]) -> Option<String> {
        for n in names {
            let Ok(mut m) = self.maintenance(n) else {
                continue;
            };
            let Ok(Ok(st)) =
                tokio::time::timeout(Duration::from_millis(500), m.status(StatusRequest {})).await
            else {
                continue;
            };
            let st = st.into_inner();
            if st.leader != 0 {
                return Some(format!("s{}", st.leader));
            }
        }
        None
    }

    /// The server's log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The `env` file's path.
    pub fn env_file(&self) -> PathBuf {
        self.dir.path().join("env")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl(&["down"]);
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout` saying `what`.
///
/// # Errors
/// On timeout.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
