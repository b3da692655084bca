//! The container runtime, as the agent sees it: a trait ([`ContainerRuntime`]) with plain
//! types, so the pod logic never sees bollard ([`crate::docker`] implements it).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

/// What can go wrong talking to the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runtime cannot be reached at all.
    #[error("container runtime unreachable: {0}")]
    Connect(String),
    /// The image is not on this host (and was not pulled).
    #[error("image {0:?} not present on this host")]
    ImageMissing(String),
    /// Pulling the image failed.
    #[error("pulling image {image:?}: {reason}")]
    Pull {
        /// The image.
        image: String,
        /// The runtime's words.
        reason: String,
    },
    /// The container (or exec) does not exist.
    #[error("no such container {0:?}")]
    NotFound(String),
    /// The named operation failed.
    #[error("{op}: {reason}")]
    Op {
        /// Which call.
        op: &'static str,
        /// The runtime's words.
        reason: String,
    },
}

/// `Result` of runtime calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A container to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    /// Unique name on the host.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Entrypoint override (Kubernetes `command`); `None` keeps the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Arguments (Kubernetes `args`); `None` keeps the image's.
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Labels; the agent finds its containers by them.
    pub labels: BTreeMap<String, String>,
    /// Bind mounts `host:container[:ro]`.
    pub binds: Vec<String>,
    /// Network: `Join(id)` shares the namespace of another container (the sandbox);
    /// `Bridge(net)` attaches to a named bridge network.
    pub network: Network,
    /// Hostname (sandbox only: joined containers share it).
    pub hostname: Option<String>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Relative CPU weight (1024 = one CPU requested).
    pub cpu_shares: Option<i64>,
    /// DNS servers, search domains and options for the resolver (sandbox only).
    pub dns: Vec<String>,
    /// Search domains.
    pub dns_search: Vec<String>,
    /// Resolver options (`ndots:5`).
    pub dns_options: Vec<String>,
    /// Allocate a terminal and keep stdin open (`tty`, `stdin` in the pod spec).
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
}

/// Where a container's network comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// The runtime's default.
    #[default]
    Default,
    /// A named bridge network.
    Bridge(String),
    /// The network namespace of another container.
    Join(String),
}

/// What the runtime knows of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// Runtime id.
    pub id: String,
    /// Name (without Docker's leading slash).
    pub name: String,
    /// Image as asked for.
    pub image: String,
    /// Image id (digest).
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: State,
    /// IP on the bridge network, when attached to one.
    pub ip: Option<String>,
}

/// A container's lifecycle state, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    /// Running since `started_at` (RFC 3339).
    Running {
        /// When it started.
        started_at: String,
    },
    /// Exited.
    Exited {
        /// Exit code.
        code: i64,
        /// Killed by the kernel's OOM killer.
        oom_killed: bool,
        /// When it started.
        started_at: String,
        /// When it ended.
        finished_at: String,
        /// The runtime's error, if it failed to start.
        error: String,
    },
}

impl State {
    /// Whether it runs.
    pub fn running(&self) -> bool {
        matches!(self, State::Running { .. })
    }

    /// The state without its details.
    pub fn kind(&self) -> StateKind {
        match self {
            State::Created => StateKind::Created,
            State::Running { .. } => StateKind::Running,
            State::Exited { .. } => StateKind::Exited,
        }
    }
}

/// A container's state as a cheap list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Exited (or dead, or being removed).
    Exited,
}

/// Output of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub code: i64,
    /// stdout and stderr, interleaved, capped.
    pub output: Vec<u8>,
}

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (everything, with a terminal).
    Stdout,
    /// Standard error.
    Stderr,
}

/// An interactive exec: output as it comes, stdin, and the exit code once it ends.
pub struct ExecSession {
    /// Output until the command ends.
    pub output: BoxStream<'static, Result<(Stream, Vec<u8>)>>,
    /// The command's standard input (closing it sends EOF).
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Resolves to the exit code; await it after the output has ended.
    pub exit: futures::future::BoxFuture<'static, Result<i64>>,
}

/// Resource use of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU in cores, averaged since the previous sample.
    pub cpu_cores: f64,
    /// Memory in bytes (working set).
    pub memory_bytes: u64,
}

/// The operations the agent needs from a container runtime.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Makes sure the pod network exists.
    fn ensure_network(&self, name: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Every container carrying `label=value`, running or not.
    fn list(
        &self,
        label: &str,
        value: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Container>>> + Send;
    /// Ids and states of every container carrying `label=value`, in one cheap call.
    fn summaries(
        &self,
        label: &str,
        value: &str,
    ) -> impl std::future::Future<Output = Result<Vec<(String, StateKind)>>> + Send;
    /// One container; `None` when it does not exist.
    fn inspect(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<Container>>> + Send;
    /// Whether the image is on this host.
    fn has_image(&self, image: &str) -> impl std::future::Future<Output = Result<bool>> + Send;
    /// Pulls the image.
    fn pull(&self, image: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Creates a container, returning its id.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl std::future::Future<Output = Result<String>> + Send;
    /// Starts a created container.
    fn start(&self, id: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Removes a container (killing it if it runs).
    fn remove(&self, id: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Runs `cmd` in a running container and waits for it, at most `timeout`.
    fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ExecOutput>> + Send;
    /// Starts `cmd` in a running container with its I/O attached (for `bosun exec`).
    fn exec_attached(
        &self,
        id: &str,
        cmd: &[String],
        stdin: bool,
        tty: bool,
    ) -> impl std::future::Future<Output = Result<ExecSession>> + Send;
    /// The container's output: the last `tail` lines (all when `None`), then, when
    /// `follow`, what it writes until it exits.
    fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxStream<'static, Result<Vec<u8>>>;
    /// Current resource use.
    fn usage(&self, id: &str) -> impl std::future::Future<Output = Result<Usage>> + Send;
    /// Follows the runtime's events for the containers carrying `label=value` until
    /// `cancel`, reopening the stream with back-off when it fails, so that
    /// [`ContainerRuntime::inspect`] reports what the runtime's state alone can miss: Docker
    /// 20.10 loses a container's OOM kill from its state when the kernel's OOM
    /// notification reaches it after the exit, but still sends the `oom` event.
    fn follow_events(
        &self,
        label: &str,
        value: &str,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send;
}
