//! Server and client configuration files (TOML).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bosun_pki::TlsMaterial;
use bosun_store::server::Listen;
use bosun_store::{Member, NodeConfig};
use serde::{Deserialize, Serialize};

/// TLS files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// Our certificate.
    pub cert: PathBuf,
    /// Our key.
    pub key: PathBuf,
}

impl From<&TlsFiles> for TlsMaterial {
    fn from(t: &TlsFiles) -> Self {
        TlsMaterial {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }
    }
}

/// Raft tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms.
    pub election_min_ms: u64,
    /// Election timeout upper bound, ms.
    pub election_max_ms: u64,
    /// Snapshot every this many log entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        // openraft 0.9 lets a follower stand for election only after the leader's lease
        // (= election_max_ms) plus a random election timeout: 260-400 ms here. 40-140 ms
        // (180-280 ms) failed over faster but caused elections under full write load on a
        // two-core machine (docs/benchmarks.md); a control plane wants stability first.
        // The random part is 140 ms wide so that two candidates rarely split the vote.
        RaftTuning {
            heartbeat_ms: 20,
            election_min_ms: 60,
            election_max_ms: 200,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// One member in the bootstrap list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// Raft id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Peer address.
    pub peer_addr: String,
    /// Client address.
    pub client_addr: String,
}

/// `bosun server` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// This server's name.
    pub name: String,
    /// This server's Raft id.
    pub id: u64,
    /// Cluster name.
    #[serde(default = "default_cluster")]
    pub cluster_name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Peer address.
    pub peer_addr: SocketAddr,
    /// Client address.
    pub client_addr: SocketAddr,
    /// Admin (metrics) address.
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
    /// Largest value accepted, bytes (etcd's default 1.5 MiB).
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// The leader compacts history older than this many revisions (0: never).
    #[serde(default = "default_retain")]
    pub compaction_retain_revisions: i64,
    /// How often the leader considers compacting, ms.
    #[serde(default = "default_compaction_interval")]
    pub compaction_interval_ms: u64,
    /// Join an existing cluster instead of bootstrapping with `members`.
    #[serde(default)]
    pub join: bool,
    /// TLS files.
    pub tls: TlsFiles,
    /// Raft tuning.
    #[serde(default)]
    pub raft: RaftTuning,
    /// Initial members (bootstrap).
    #[serde(default)]
    pub members: Vec<MemberEntry>,
    /// API server settings.
    #[serde(default)]
    pub api: ApiSettings,
    /// Controller settings.
    #[serde(default)]
    pub controllers: ControllerSettings,
}

/// Controller settings (`[controllers]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSettings {
    /// A node is Ready=Unknown and tainted unreachable after this long without a
    /// heartbeat, ms.
    pub node_grace_ms: u64,
    /// Pods on an unreachable node are evicted this long after it was tainted (unless
    /// they tolerate it longer), ms.
    pub eviction_ms: u64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            node_grace_ms: 10_000,
            eviction_ms: 30_000,
        }
    }
}

/// API server settings (`[api]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// JSON-lines audit log of every mutating request (default: `<data_dir>/audit.log`).
    pub audit_log: Option<PathBuf>,
    /// Service IPs are allocated from this range.
    pub service_cidr: String,
    /// Encrypt Secrets at rest (on by default; Kubernetes leaves it off).
    pub encrypt_secrets: bool,
    /// The key file (default: `secrets.key` beside the CA certificate, written by
    /// `bosun pki init`).
    pub secrets_key: Option<PathBuf>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            audit_log: None,
            service_cidr: "10.96.0.0/16".into(),
            encrypt_secrets: true,
            secrets_key: None,
        }
    }
}

fn default_cluster() -> String {
    "bosun".into()
}

fn default_retain() -> i64 {
    10_000
}

fn default_compaction_interval() -> u64 {
    30_000
}

fn default_max_value() -> usize {
    1536 * 1024
}

impl ServerConfig {
    /// Reads and checks a server config.
    ///
    /// # Errors
    /// When the file is unreadable, malformed or inconsistent.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: ServerConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if c.id == 0 {
            bail!("{}: id must be non-zero", path.display());
        }
        if !c.join && c.members.is_empty() {
            bail!(
                "{}: members is empty: list the initial members, or set join = true",
                path.display()
            );
        }
        if !c.join && !c.members.iter().any(|m| m.id == c.id) {
            bail!(
                "{}: this server (id {}) is not in members",
                path.display(),
                c.id
            );
        }
        if c.max_value_bytes == 0 || c.max_value_bytes > 64 << 20 {
            bail!(
                "{}: max_value_bytes must be between 1 and 64 MiB",
                path.display()
            );
        }
        Ok(c)
    }

    /// The store's config.
    pub fn node(&self) -> NodeConfig {
        let initial_members: BTreeMap<u64, Member> = if self.join {
            BTreeMap::new()
        } else {
            self.members
                .iter()
                .map(|m| {
                    (
                        m.id,
                        Member {
                            name: m.name.clone(),
                            peer_addr: m.peer_addr.clone(),
                            client_addr: m.client_addr.clone(),
                        },
                    )
                })
                .collect()
        };
        NodeConfig {
            id: self.id,
            member: Member {
                name: self.name.clone(),
                peer_addr: self.peer_addr.to_string(),
                client_addr: self.client_addr.to_string(),
            },
            dir: self.data_dir.clone(),
            cluster_name: self.cluster_name.clone(),
            initial_members,
            heartbeat_ms: self.raft.heartbeat_ms,
            election_min_ms: self.raft.election_min_ms,
            election_max_ms: self.raft.election_max_ms,
            snapshot_every: self.raft.snapshot_every,
            keep_after_snapshot: self.raft.keep_after_snapshot,
            max_value_bytes: self.max_value_bytes,
            compaction_retain: self.compaction_retain_revisions,
            compaction_interval_ms: self.compaction_interval_ms,
        }
    }

    /// The API server's config: opens the audit log and loads the Secrets keys.
    ///
    /// # Errors
    /// When the audit log cannot be opened, the service range is malformed, or Secrets
    /// are to be encrypted and the key file is missing or malformed.
    pub fn api(&self) -> Result<bosun_apiserver::Config> {
        let audit_path = self
            .api
            .audit_log
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit.log"));
        let audit = bosun_apiserver::Audit::open(Some(&audit_path))
            .with_context(|| format!("opening the audit log {}", audit_path.display()))?;
        let service_cidr = bosun_apiserver::allocator::ServiceCidr::parse(&self.api.service_cidr)
            .map_err(|e| anyhow::anyhow!("api.service_cidr: {e}"))?;
        let secrets = if self.api.encrypt_secrets {
            let path = self.api.secrets_key.clone().unwrap_or_else(|| {
                self.tls
                    .ca
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join("secrets.key")
            });
            let keys = bosun_apiserver::SecretKeys::load(&path).with_context(|| {
                format!(
                    "Secrets are encrypted at rest, and the key file {} cannot be used \
                     (`bosun pki init` writes it; or set api.encrypt_secrets = false)",
                    path.display()
                )
            })?;
            if !keys.enabled() {
                bail!(
                    "the secrets key file {} holds no key: add one, or set api.encrypt_secrets = false",
                    path.display()
                );
            }
            keys
        } else {
            tracing::warn!("api.encrypt_secrets = false: Secrets are stored unencrypted");
            bosun_apiserver::SecretKeys::default()
        };
        Ok(bosun_apiserver::Config {
            audit,
            service_cidr,
            secrets,
            max_object_bytes: self.max_value_bytes,
            agents: Some(
                bosun_pki::Dialer::new(&(&self.tls).into())
                    .context("loading this server's certificate to dial agents")?,
            ),
        })
    }

    /// Listen addresses and TLS.
    pub fn listen(&self) -> Listen {
        Listen {
            peer: self.peer_addr,
            client: self.client_addr,
            admin: self.admin_addr,
            tls: (&self.tls).into(),
        }
    }
}

/// The CLI's client configuration (`~/.bosun/config`, `BOSUN_CONFIG`, `--config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Every server's client address; the CLI fails over between them.
    pub servers: Vec<String>,
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// User certificate.
    pub cert: PathBuf,
    /// User key.
    pub key: PathBuf,
    /// Default namespace.
    #[serde(default = "default_ns")]
    pub namespace: String,
}

fn default_ns() -> String {
    "default".into()
}

impl ClientConfig {
    /// Finds and reads the client config: `--config`, then `BOSUN_CONFIG`, then
    /// `~/.bosun/config`.
    ///
    /// # Errors
    /// When no config is found or it is malformed.
    pub fn find(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("BOSUN_CONFIG") {
                Some(p) => PathBuf::from(p),
                None => {
                    let home = std::env::var_os("HOME")
                        .context("HOME is not set and no --config or BOSUN_CONFIG given")?;
                    PathBuf::from(home).join(".bosun/config")
                }
            },
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading client config {} (set --config or BOSUN_CONFIG)",
                path.display()
            )
        })?;
        let c: ClientConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if c.servers.is_empty() {
            bail!("{}: servers is empty", path.display());
        }
        Ok(c)
    }

    /// TLS material.
    pub fn tls(&self) -> TlsMaterial {
        TlsMaterial {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// A worker agent's configuration (`bosun agent --config FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The node's name (its certificate must be `system:node:<name>`).
    pub name: String,
    /// Every server's client address.
    pub servers: Vec<String>,
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's key.
    pub key: PathBuf,
    /// The node's address (its InternalIP, and `status.hostIP` of its pods).
    pub address: String,
    /// Where pod volumes are kept (the Docker daemon must see the same path).
    pub data_dir: PathBuf,
    /// The agent's port on `address` (logs and exec, for API servers only).
    #[serde(default = "default_agent_port")]
    pub port: u16,
    /// The Docker bridge network of pods.
    #[serde(default = "default_network")]
    pub network: String,
    /// The sandbox image (needs /bin/sh and sleep).
    #[serde(default = "default_sandbox_image")]
    pub sandbox_image: String,
    /// Whether images may be pulled from a registry.
    #[serde(default = "default_true")]
    pub pulls: bool,
    /// Allocatable cpu; default: the host's cores.
    pub cpu: Option<String>,
    /// Allocatable memory; default: the host's memory.
    pub memory: Option<String>,
    /// Pods at most.
    #[serde(default = "default_pods")]
    pub pods: u32,
    /// Node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints set at first registration (`key`, `value`, `effect`).
    #[serde(default)]
    pub taints: Vec<TaintEntry>,
    /// Lease and status interval, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// First restart back-off, ms (Kubernetes: 10 s).
    #[serde(default = "default_backoff_ms")]
    pub backoff_initial_ms: u64,
    /// Longest restart back-off, ms (Kubernetes: 5 min).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

/// A taint in the agent config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintEntry {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

fn default_agent_port() -> u16 {
    10250
}
fn default_network() -> String {
    "bosun".into()
}
fn default_sandbox_image() -> String {
    "bosun/busybox:latest".into()
}
fn default_true() -> bool {
    true
}
fn default_pods() -> u32 {
    110
}
fn default_heartbeat_ms() -> u64 {
    2_500
}
fn default_backoff_ms() -> u64 {
    10_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}

impl AgentConfig {
    /// Reads and checks an agent config.
    ///
    /// # Errors
    /// When the file is unreadable or malformed, or a field is invalid.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent config {}", path.display()))?;
        let c: AgentConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if c.servers.is_empty() {
            bail!("{}: servers is empty", path.display());
        }
        if let Err(e) = bosun_api::admission::dns1123_subdomain(&c.name) {
            bail!("{}: name {:?}: {e}", path.display(), c.name);
        }
        if c.address.parse::<std::net::IpAddr>().is_err() {
            bail!(
                "{}: address {:?} is not an IP address",
                path.display(),
                c.address
            );
        }
        for t in &c.taints {
            if !matches!(
                t.effect.as_str(),
                "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            ) {
                bail!(
                    "{}: taint {:?}: effect {:?} must be NoSchedule, PreferNoSchedule or NoExecute",
                    path.display(),
                    t.key,
                    t.effect
                );
            }
        }
        Ok(c)
    }

    /// TLS material.
    pub fn tls(&self) -> TlsMaterial {
        TlsMaterial {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// config/examples of this checkout, found at run time: with a build cache shared
    /// between checkouts, a path baked in by `env!` can name another checkout.
    fn examples_dir() -> PathBuf {
        let start = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        start
            .ancestors()
            .map(|d| d.join("config/examples"))
            .find(|d| d.is_dir())
            .unwrap_or(start)
    }

    #[test]
    fn the_example_configs_parse() {
        let root = examples_dir();
        let s = ServerConfig::load(&root.join("server.toml")).unwrap();
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.node().initial_members.len(), 3);
        let c = ClientConfig::find(Some(&root.join("client.toml"))).unwrap();
        assert_eq!(c.servers.len(), 3);
        let a = AgentConfig::load(&root.join("agent.toml")).unwrap();
        assert_eq!(
            (a.name.as_str(), a.port, a.servers.len()),
            ("worker-1", 10250, 3)
        );
    }

    #[test]
    fn an_agent_config_with_a_bad_name_address_or_taint_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        let base = std::fs::read_to_string(examples_dir().join("agent.toml")).unwrap();
        for (from, to, says) in [
            (
                "name = \"worker-1\"",
                "name = \"Worker_1\"",
                "name \"Worker_1\"",
            ),
            (
                "address = \"10.0.0.21\"",
                "address = \"nowhere\"",
                "not an IP address",
            ),
            (
                "# taints = [{ key = \"dedicated\", value = \"batch\", effect = \"NoSchedule\" }]",
                "taints = [{ key = \"x\", effect = \"Sometimes\" }]",
                "effect \"Sometimes\"",
            ),
            ("pods = 110", "pods = 110\nbogus = 1", "unknown field"),
        ] {
            assert!(base.contains(from), "{from}");
            std::fs::write(&p, base.replace(from, to)).unwrap();
            let err = format!("{:#}", AgentConfig::load(&p).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_config_that_omits_this_server_from_members_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let text = std::fs::read_to_string(examples_dir().join("server.toml"))
            .unwrap()
            .replacen("id = 1 ", "id = 9 ", 1);
        std::fs::write(&p, text).unwrap();
        let err = ServerConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("not in members"), "{err}");
    }
}
