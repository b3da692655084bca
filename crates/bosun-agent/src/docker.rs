//! [`ContainerRuntime`] on Docker Engine, through bollard: the one module that knows
//! bollard's types (STYLE.md rule 4).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, EndpointSettings,
    ExecConfig, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    ListNetworksOptions, LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::Docker as Bollard;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::runtime::{
    Container, ContainerRuntime, ContainerSpec, Error, ExecOutput, ExecSession, Network, Result,
    State, StateKind, Stream, Usage,
};

/// Exec output kept for a probe or `bosun exec` without a terminal.
const EXEC_OUTPUT_CAP: usize = 64 * 1024;

/// How many OOM kills are remembered (the oldest are forgotten first).
const OOM_MARKS: usize = 4096;
/// How long an OOM kill is remembered: long enough for the agent to report the exit.
const OOM_MEMORY: Duration = Duration::from_secs(3600);
/// How far back the event stream is replayed when it is first opened: OOM kills of
/// containers that ended while no agent was watching (Docker keeps recent events).
const OOM_REPLAY: Duration = Duration::from_secs(300);
/// Back-off between attempts to reopen the event stream.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(200);
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Docker Engine over its unix socket (`DOCKER_HOST` honoured).
#[derive(Clone)]
pub struct Docker {
    api: Bollard,
    /// Containers the engine sent an `oom` event for (see [`Docker::follow_events`]).
    ooms: Arc<Mutex<OomMarks>>,
}

/// The containers that had an OOM kill, bounded in number and age.
#[derive(Default)]
struct OomMarks {
    at: HashMap<String, Instant>,
}

impl OomMarks {
    fn mark(&mut self, id: &str) {
        let now = Instant::now();
        self.at
            .retain(|_, t| now.saturating_duration_since(*t) < OOM_MEMORY);
        if self.at.len() >= OOM_MARKS && !self.at.contains_key(id) {
            if let Some(oldest) = self
                .at
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.at.remove(&oldest);
            }
        }
        self.at.insert(id.to_string(), now);
    }

    fn seen(&self, id: &str) -> bool {
        self.at.contains_key(id)
    }
}

fn op(op: &'static str) -> impl Fn(DockerError) -> Error {
    move |e| match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => Error::NotFound(message),
        e => Error::Op {
            op,
            reason: e.to_string(),
        },
    }
}

impl Docker {
    /// Connects and agrees on an API version with the daemon (Debian's Docker 20.10 speaks
    /// API 1.41, older than bollard's default).
    ///
    /// # Errors
    /// [`Error::Connect`] when the daemon does not answer.
    pub async fn connect() -> Result<Self> {
        let api = Bollard::connect_with_local_defaults()
            .map_err(|e| Error::Connect(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let v = api
            .version()
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        tracing::info!(
            version = v.version.as_deref().unwrap_or("?"),
            api = v.api_version.as_deref().unwrap_or("?"),
            "docker engine"
        );
        Ok(Docker {
            api,
            ooms: Arc::default(),
        })
    }

    /// Whether the engine reported an OOM kill in container `id` (by its full id) while
    /// [`ContainerRuntime::follow_events`] ran.
    pub fn oom_seen(&self, id: &str) -> bool {
        self.ooms.lock().map(|m| m.seen(id)).unwrap_or(false)
    }

    /// One pass over the event stream: returns when it ends or fails, with whether it
    /// delivered anything. `since` (Unix seconds) advances past each event read.
    async fn read_events(
        &self,
        label: &str,
        value: &str,
        since: &mut i64,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["oom".to_string()]),
            ("label".to_string(), vec![format!("{label}={value}")]),
        ]);
        let opts = EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        };
        let mut events = self.api.events(Some(opts));
        let mut any = false;
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Ok(any),
                n = events.next() => n,
            };
            let Some(ev) = next else {
                return Ok(any);
            };
            let ev = ev.map_err(op("events"))?;
            any = true;
            if let Some(t) = ev.time {
                *since = (*since).max(t);
            }
            if ev.action.as_deref() != Some("oom") {
                continue;
            }
            if let Some(id) = ev.actor.and_then(|a| a.id) {
                tracing::info!(container = %id, "the engine reports an OOM kill");
                if let Ok(mut m) = self.ooms.lock() {
                    m.mark(&id);
                }
            }
        }
    }

    /// The engine's version string (for the Node's `containerRuntimeVersion`).
    ///
    /// # Errors
    /// When the daemon does not answer.
    pub async fn version(&self) -> Result<String> {
        let v = self.api.version().await.map_err(op("version"))?;
        Ok(format!("docker://{}", v.version.unwrap_or_default()))
    }
}

/// The state as the engine reports it; `oom_seen` when an `oom` event came for it, which
/// counts as an OOM kill even where the engine's own flag says otherwise.
fn state_of(s: Option<&bollard::models::ContainerState>, oom_seen: bool) -> State {
    let Some(s) = s else {
        return State::Created;
    };
    let started_at = s.started_at.clone().unwrap_or_default();
    match s.status {
        Some(ContainerStateStatusEnum::RUNNING)
        | Some(ContainerStateStatusEnum::PAUSED)
        | Some(ContainerStateStatusEnum::RESTARTING) => State::Running { started_at },
        Some(ContainerStateStatusEnum::CREATED) | None | Some(ContainerStateStatusEnum::EMPTY) => {
            State::Created
        }
        _ => State::Exited {
            code: s.exit_code.unwrap_or(-1),
            oom_killed: s.oom_killed.unwrap_or(false) || oom_seen,
            started_at,
            finished_at: s.finished_at.clone().unwrap_or_default(),
            error: s.error.clone().unwrap_or_default(),
        },
    }
}

impl Docker {
    /// Removes every network named `name` but the one with the smallest id; whether there
    /// were several. A network still in use stays (its containers keep it) and is retried
    /// on the next call.
    async fn dedupe_network(&self, name: &str) -> Result<bool> {
        let opts = ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![name.to_string()],
            )])),
        };
        let nets = self
            .api
            .list_networks(Some(opts))
            .await
            .map_err(op("list networks"))?;
        let mut ids: Vec<&str> = nets
            .iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id.as_deref())
            .collect();
        ids.sort_unstable();
        for extra in ids.iter().skip(1) {
            tracing::info!(
                network = name,
                id = extra,
                "removing a duplicate pod network"
            );
            if let Err(e) = self.api.remove_network(extra).await {
                tracing::debug!(network = name, id = extra, error = %e, "duplicate network not removed; retrying later");
            }
        }
        Ok(ids.len() > 1)
    }
}

impl ContainerRuntime for Docker {
    async fn ensure_network(&self, name: &str) -> Result<()> {
        match self.api.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                // Two networks of this name (agents that started together on a fresh
                // daemon each made one): keep the smallest id, as below.
                if self.dedupe_network(name).await? {
                    return Ok(());
                }
                return Err(op("inspect network")(e));
            }
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([("bosun.io/network".into(), "pods".into())])),
            ..Default::default()
        };
        match self.api.create_network(req).await {
            Ok(_) => {}
            // Another agent on this host made it first.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => return Ok(()),
            Err(e) => return Err(op("create network")(e)),
        }
        // Docker allows two networks of one name: agents starting together may both have
        // made one. Every agent keeps the one with the smallest id and removes the others,
        // so they converge on one (an agent that saw only its own does it on its next
        // sync, when the name is ambiguous).
        self.dedupe_network(name).await?;
        Ok(())
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Container>> {
        let ids = self.summaries(label, value).await?;
        let mut out = Vec::with_capacity(ids.len());
        // The summary has no exit code or times: inspect each one.
        for (id, _) in ids {
            if let Some(c) = self.inspect(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn summaries(&self, label: &str, value: &str) -> Result<Vec<(String, StateKind)>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = self
            .api
            .list_containers(Some(opts))
            .await
            .map_err(op("list containers"))?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let kind = match s.state {
                    Some(ContainerSummaryStateEnum::RUNNING)
                    | Some(ContainerSummaryStateEnum::PAUSED)
                    | Some(ContainerSummaryStateEnum::RESTARTING) => StateKind::Running,
                    Some(ContainerSummaryStateEnum::CREATED) => StateKind::Created,
                    _ => StateKind::Exited,
                };
                s.id.map(|id| (id, kind))
            })
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<Container>> {
        match self.api.inspect_container(id, None).await {
            Ok(c) => {
                let labels: BTreeMap<String, String> = c
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let ip = c
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
                    .filter(|ip| !ip.is_empty());
                Ok(Some(Container {
                    id: c.id.clone().unwrap_or_else(|| id.to_string()),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    image: c
                        .config
                        .as_ref()
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                    image_id: c.image.unwrap_or_default(),
                    labels,
                    state: state_of(
                        c.state.as_ref(),
                        c.id.as_deref().is_some_and(|i| self.oom_seen(i)),
                    ),
                    ip,
                }))
            }
            // Removed meanwhile.
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(op("inspect container")(e)),
        }
    }

    async fn has_image(&self, image: &str) -> Result<bool> {
        match self.api.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(op("inspect image")(e)),
        }
    }

    async fn pull(&self, image: &str) -> Result<()> {
        let (repo, tag) = split_image(image);
        let opts = CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut s = self.api.create_image(Some(opts), None, None);
        while let Some(r) = s.next().await {
            r.map_err(|e| Error::Pull {
                image: image.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let (network_mode, networking_config) = match &spec.network {
            Network::Default => (None, None),
            Network::Join(id) => (Some(format!("container:{id}")), None),
            Network::Bridge(net) => (
                Some(net.clone()),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        net.clone(),
                        EndpointSettings::default(),
                    )])),
                }),
            ),
        };
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: some_vec(&spec.env),
            working_dir: spec.working_dir.clone(),
            labels: Some(spec.labels.clone().into_iter().collect()),
            hostname: spec.hostname.clone(),
            tty: Some(spec.tty),
            open_stdin: Some(spec.stdin),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(HostConfig {
                binds: some_vec(&spec.binds),
                network_mode,
                memory: spec.memory,
                nano_cpus: spec.nano_cpus,
                cpu_shares: spec.cpu_shares,
                dns: some_vec(&spec.dns),
                dns_search: some_vec(&spec.dns_search),
                dns_options: some_vec(&spec.dns_options),
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        match self.api.create_container(Some(opts), body).await {
            Ok(r) => Ok(r.id),
            Err(DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.contains("No such image") => Err(Error::ImageMissing(spec.image.clone())),
            Err(e) => Err(op("create container")(e)),
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        match self.api.start_container(id, None).await {
            Ok(()) => Ok(()),
            // Already running.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(op("start container")(e)),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(secs),
            ..Default::default()
        };
        match self.api.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            // Not running any more.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(op("stop container")(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.api.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(op("remove container")(e)),
        }
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        let run = async {
            let mut session = self.exec_attached(id, cmd, false, false).await?;
            drop(session.input);
            let mut output = Vec::new();
            while let Some(chunk) = session.output.next().await {
                let (_, bytes) = chunk?;
                let room = EXEC_OUTPUT_CAP.saturating_sub(output.len());
                output.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            let code = session.exit.await?;
            Ok(ExecOutput { code, output })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(Error::Op {
                op: "exec",
                reason: format!("timed out after {timeout:?}"),
            }),
        }
    }

    async fn exec_attached(
        &self,
        id: &str,
        cmd: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<ExecSession> {
        let cfg = ExecConfig {
            cmd: Some(cmd.to_vec()),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..Default::default()
        };
        let exec = self
            .api
            .create_exec(id, cfg)
            .await
            .map_err(op("create exec"))?;
        match self
            .api
            .start_exec(&exec.id, None)
            .await
            .map_err(op("start exec"))?
        {
            StartExecResults::Attached { output, input } => {
                let api = self.api.clone();
                let exec_id = exec.id.clone();
                Ok(ExecSession {
                    output: output
                        .map_ok(|o| match o {
                            LogOutput::StdErr { message } => (Stream::Stderr, message.to_vec()),
                            other => (Stream::Stdout, log_bytes(other)),
                        })
                        .map_err(op("exec output"))
                        .boxed(),
                    input,
                    exit: async move {
                        let info = api
                            .inspect_exec(&exec_id)
                            .await
                            .map_err(op("inspect exec"))?;
                        Ok(info.exit_code.unwrap_or(-1))
                    }
                    .boxed(),
                })
            }
            StartExecResults::Detached => Err(Error::Op {
                op: "start exec",
                reason: "the engine started the exec detached".into(),
            }),
        }
    }

    fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> BoxStream<'static, Result<Vec<u8>>> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        self.api
            .logs(id, Some(opts))
            .map_ok(log_bytes)
            .map_err(op("logs"))
            .boxed()
    }

    async fn follow_events(&self, label: &str, value: &str, cancel: CancellationToken) {
        let mut since = unix_now().saturating_sub(secs(OOM_REPLAY));
        let mut backoff = EVENTS_BACKOFF_MIN;
        while !cancel.is_cancelled() {
            let opened = unix_now();
            match self.read_events(label, value, &mut since, &cancel).await {
                Ok(any) => {
                    if any {
                        backoff = EVENTS_BACKOFF_MIN;
                    }
                    tracing::debug!("the engine's event stream ended; reopening");
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "following the engine's events failed");
                }
            }
            // What came before this pass opened has been read (or replayed next time).
            since = since.max(opened.saturating_sub(1));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
        }
    }

    async fn usage(&self, id: &str) -> Result<Usage> {
        let opts = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let s = self
            .api
            .stats(id, Some(opts))
            .next()
            .await
            .ok_or_else(|| Error::NotFound(id.to_string()))?
            .map_err(op("stats"))?;
        let total = |c: &Option<bollard::models::ContainerCpuStats>| {
            c.as_ref()
                .and_then(|c| c.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0)
        };
        let system = |c: &Option<bollard::models::ContainerCpuStats>| {
            c.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0)
        };
        let cpus = s
            .cpu_stats
            .as_ref()
            .and_then(|c| c.online_cpus)
            .unwrap_or(1)
            .max(1);
        let dc = total(&s.cpu_stats).saturating_sub(total(&s.precpu_stats)) as f64;
        let ds = system(&s.cpu_stats).saturating_sub(system(&s.precpu_stats)) as f64;
        let cpu_cores = if ds > 0.0 {
            dc / ds * f64::from(cpus)
        } else {
            0.0
        };
        let mem = s.memory_stats.as_ref();
        let usage = mem.and_then(|m| m.usage).unwrap_or(0);
        // Working set, as the kubelet reports it: usage less inactive file pages.
        let inactive = mem
            .and_then(|m| m.stats.as_ref())
            .and_then(|st| {
                st.get("total_inactive_file")
                    .or_else(|| st.get("inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        Ok(Usage {
            cpu_cores,
            memory_bytes: usage.saturating_sub(inactive),
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(secs)
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn log_bytes(o: LogOutput) -> Vec<u8> {
    match o {
        LogOutput::StdErr { message }
        | LogOutput::StdOut { message }
        | LogOutput::StdIn { message }
        | LogOutput::Console { message } => message.to_vec(),
    }
}

/// `repo[:tag]` → (repo, tag); a digest reference keeps its `@sha256:…` in the repo.
fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::{split_image, state_of, OomMarks, OOM_MARKS};
    use crate::runtime::State;
    use bollard::models::{ContainerState, ContainerStateStatusEnum};

    fn exited(code: i64, oom_flag: bool) -> ContainerState {
        ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(code),
            oom_killed: Some(oom_flag),
            ..Default::default()
        }
    }

    fn oom_killed(s: &State) -> bool {
        matches!(
            s,
            State::Exited {
                oom_killed: true,
                ..
            }
        )
    }

    #[test]
    fn an_oom_event_counts_even_when_the_engine_state_lost_it() {
        // Docker 20.10 sets the flag only when its OOM event is processed before the exit.
        assert!(oom_killed(&state_of(Some(&exited(137, false)), true)));
        assert!(oom_killed(&state_of(Some(&exited(137, true)), false)));
        assert!(!oom_killed(&state_of(Some(&exited(137, false)), false)));
        assert!(!oom_killed(&state_of(Some(&exited(1, false)), false)));
    }

    #[test]
    fn oom_marks_are_bounded_and_forget_the_oldest() {
        let mut m = OomMarks::default();
        for i in 0..OOM_MARKS + 10 {
            m.mark(&format!("c{i}"));
        }
        assert_eq!(m.at.len(), OOM_MARKS);
        assert!(!m.seen("c0"), "the oldest is forgotten");
        assert!(m.seen(&format!("c{}", OOM_MARKS + 9)));
        m.mark(&format!("c{}", OOM_MARKS + 9));
        assert_eq!(m.at.len(), OOM_MARKS, "marking again adds nothing");
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_image("bosun/busybox"), ("bosun/busybox", "latest"));
        assert_eq!(split_image("bosun/busybox:v2"), ("bosun/busybox", "v2"));
        assert_eq!(
            split_image("localhost:5000/web"),
            ("localhost:5000/web", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/web:1"),
            ("localhost:5000/web", "1")
        );
    }
}
