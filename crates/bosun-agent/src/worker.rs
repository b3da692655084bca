//! One pod's worker: a task that drives the pod's containers toward its spec and reports
//! its status, until the pod is gone.
//!
//! Every pass is level-triggered: it reads what the runtime has (containers carry the pod
//! uid, container name and attempt in labels, so an agent restart picks up where the last
//! one stopped), decides the next steps, takes them, and writes the status when it
//! changed. Timers (back-off, probes) only decide when the next pass runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bosun_client::{Client, Code};
use k8s_openapi::api::core::v1::{ConfigMap, Container as KContainer, Pod, Secret};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::pod::{
    self, PodFacts, Refs, Role, LABEL_AGENT, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_POD_UID, SANDBOX,
};
use crate::probe::{Outcome, Tracker};
use crate::runtime::{Container, ContainerRuntime, Error as RtError, State};
use crate::Settings;

/// A pass runs at least this often (status of exited containers, missed events).
const RESYNC: Duration = Duration::from_secs(2);
/// After a failed pass (runtime or API error), the next one waits this long at first…
const ERROR_BACKOFF: Duration = Duration::from_millis(200);
/// …doubling up to this.
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A container that ran this long has its restart back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Where a pod is in its life, as this worker drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sandbox or init containers not done, or no container started yet.
    Pending,
    /// Containers started; some run or will be restarted.
    Running,
    /// Every container ended and none will restart; all exited 0.
    Succeeded,
    /// Every container ended and none will restart; some failed (or an init container
    /// failed under restartPolicy Never).
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Restart back-off of one container, as the kubelet does it: the first restart is
/// immediate, then 10 s (configurable), doubling up to 5 min.
#[derive(Debug, Clone)]
struct Backoff {
    /// The wait before the next restart after this one.
    delay: Duration,
    /// The wait now in force (reported in CrashLoopBackOff's message).
    waited: Duration,
    not_before: Instant,
}

/// Why a container is waiting, as reported in its status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    reason: &'static str,
    message: String,
}

/// Probe trackers of one running container (by runtime id).
struct Probes {
    id: String,
    startup: Option<Tracker>,
    liveness: Option<Tracker>,
    readiness: Option<Tracker>,
}

impl Probes {
    fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|t| t.passing)
    }
    fn ready(&self) -> bool {
        self.started() && self.readiness.as_ref().is_none_or(|t| t.passing)
    }
}

/// The worker of one pod.
pub(crate) struct Worker<R> {
    rt: Arc<R>,
    cache: Arc<Cache<R>>,
    client: Client,
    settings: Arc<Settings>,
    /// The pod as the cache has it; `None` once it is gone.
    pod: watch::Receiver<Option<Arc<Pod>>>,
    backoff: HashMap<String, Backoff>,
    probes: HashMap<String, Probes>,
    /// First seen running, per container id (for the back-off reset).
    seen_running: HashMap<String, Instant>,
    waiting: HashMap<String, Waiting>,
    /// The status last written (to skip identical writes).
    reported: Option<Value>,
    start_time: Option<String>,
    /// A terminal phase, once reached: nothing restarts after it.
    finished: Option<Phase>,
}

fn now_rfc3339() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn attempt(c: &Container) -> u32 {
    c.labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// A pod's containers as the runtime has them, grouped by spec name, latest attempt last.
#[derive(Default)]
struct Observed {
    sandboxes: Vec<Container>,
    by_name: BTreeMap<String, Vec<Container>>,
}

impl Observed {
    fn new(mut cs: Vec<Container>, agent_id: &str) -> Self {
        cs.retain(|c| c.labels.get(LABEL_AGENT).map(String::as_str) == Some(agent_id));
        cs.sort_by_key(attempt);
        let mut o = Observed::default();
        for c in cs {
            match c.labels.get(LABEL_CONTAINER).map(String::as_str) {
                Some(SANDBOX) => o.sandboxes.push(c),
                Some(name) => o.by_name.entry(name.to_string()).or_default().push(c),
                None => {}
            }
        }
        o
    }
    fn sandbox(&self) -> Option<&Container> {
        self.sandboxes.last()
    }
    fn latest(&self, name: &str) -> Option<&Container> {
        self.by_name.get(name).and_then(|v| v.last())
    }
    fn previous(&self, name: &str) -> Option<&Container> {
        self.by_name
            .get(name)
            .and_then(|v| v.len().checked_sub(2).and_then(|i| v.get(i)))
    }
    fn all(&self) -> impl Iterator<Item = &Container> {
        self.sandboxes.iter().chain(self.by_name.values().flatten())
    }
}

fn should_restart(policy: &str, code: i64) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

impl<R: ContainerRuntime> Worker<R> {
    pub(crate) fn new(
        rt: Arc<R>,
        cache: Arc<Cache<R>>,
        client: Client,
        settings: Arc<Settings>,
        pod: watch::Receiver<Option<Arc<Pod>>>,
    ) -> Self {
        Worker {
            rt,
            cache,
            client,
            settings,
            pod,
            backoff: HashMap::new(),
            probes: HashMap::new(),
            seen_running: HashMap::new(),
            waiting: HashMap::new(),
            reported: None,
            start_time: None,
            finished: None,
        }
    }

    /// Runs passes until the pod is gone (or `cancel`: the agent stops, the containers
    /// stay, and the next agent adopts them).
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut error_backoff = ERROR_BACKOFF;
        let uid = self.uid();
        let containers_changed = self.cache.waker(&uid);
        loop {
            let current = self.pod.borrow_and_update().clone();
            let Some(pod) = current else {
                // Gone from the API (force-deleted): nothing to wait for.
                self.teardown_by_uid(Duration::ZERO).await;
                return;
            };
            let (ns, name, _) = pod::identity(&pod);
            let key = format!("{ns}/{name}");
            let next = if pod.metadata.deletion_timestamp.is_some() {
                match self.terminate(&pod).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(pod = %key, error = %e, backoff = ?error_backoff, "terminating pod failed; retrying");
                        Err(())
                    }
                }
            } else {
                match self.pass(&pod).await {
                    Ok(next) => Ok(next),
                    Err(e) => {
                        tracing::warn!(pod = %key, error = %e, backoff = ?error_backoff, "pod sync failed; retrying");
                        Err(())
                    }
                }
            };
            let wake = match next {
                Ok(at) => {
                    error_backoff = ERROR_BACKOFF;
                    at
                }
                Err(()) => {
                    let at = Instant::now() + error_backoff;
                    error_backoff = (error_backoff * 2).min(ERROR_BACKOFF_MAX);
                    at
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.pod.changed() => {
                    if r.is_err() {
                        // The agent dropped this pod's channel: it is stopping.
                        return;
                    }
                }
                                _ = containers_changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn uid(&self) -> String {
        self.pod
            .borrow()
            .as_ref()
            .and_then(|p| p.metadata.uid.clone())
            .unwrap_or_default()
    }

    /// The pod's containers, from the agent's cache (kept current by its relist and by
    /// this worker's refreshes after each change it makes).
    async fn observe(&self, uid: &str) -> Result<Observed, RtError> {
        Ok(Observed::new(self.cache.pod(uid), &self.settings.agent_id))
    }

    /// Removes a container and drops it from the cache.
    async fn remove(&self, id: &str) {
        if let Err(e) = self.rt.remove(id).await {
            tracing::debug!(container = id, error = %e, "removing container failed");
        }
        self.cache.forget(id);
    }

    /// One pass; returns when the next one is due.
    async fn pass(&mut self, pod: &Pod) -> Result<Instant, String> {
        let (_, _, uid) = pod::identity(pod);
        let uid = uid.to_string();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut obs = self.observe(&uid).await.map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut next = now + RESYNC;
        if self.start_time.is_none() {
            self.start_time = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(now_rfc3339),
            );
        }

        if self.finished.is_none() {
            // The sandbox first: everything joins its network namespace.
            let sandbox_ok = obs.sandbox().is_some_and(|s| s.state.running());
            if !sandbox_ok {
                self.new_sandbox(pod, &obs).await?;
                obs = self.observe(&uid).await.map_err(|e| e.to_string())?;
            }
        }
        let sandbox = obs.sandbox().cloned();
        let pod_ip = sandbox
            .as_ref()
            .and_then(|s| s.ip.clone())
            .unwrap_or_default();

        // Init containers, in order; each must succeed before the next starts.
        let mut initialized = true;
        let mut init_failed = false;
        if self.finished.is_none() {
            for c in spec.init_containers.iter().flatten() {
                match obs.latest(&c.name).map(|x| x.state.clone()) {
                    Some(State::Exited { code: 0, .. }) => continue,
                    Some(State::Running { .. }) => {
                        initialized = false;
                        break;
                    }
                    // A failed init container fails the pod only under Never; otherwise
                    // it is retried with back-off, as OnFailure.
                    Some(State::Exited { .. }) if policy == "Never" => {
                        initialized = false;
                        init_failed = true;
                        break;
                    }
                    _ => {
                        initialized = false;
                        let latest = obs.latest(&c.name);
                        let at = latest.map(|l| attempt(l) + 1).unwrap_or(0);
                        if let Some(wait) = self.restart_gate(&c.name, latest, now) {
                            next = next.min(wait);
                        } else if let Some(sb) = &sandbox {
                            if let Some(prev) = obs.previous(&c.name) {
                                self.remove(&prev.id).await;
                            }
                            self.start_container(pod, c, Role::Init, at, &sb.id, &pod_ip, &obs)
                                .await?;
                            next = now + Duration::from_millis(200);
                        }
                        break;
                    }
                }
            }
        } else {
            initialized = spec.init_containers.iter().flatten().all(|c| {
                matches!(
                    obs.latest(&c.name).map(|x| &x.state),
                    Some(State::Exited { code: 0, .. })
                )
            });
        }

        // Regular containers, once initialised.
        if initialized && self.finished.is_none() {
            if let Some(sb) = &sandbox {
                for c in &spec.containers {
                    let latest = obs.latest(&c.name).cloned();
                    match latest.as_ref().map(|x| &x.state) {
                        None => {
                            if let Some(wait) = self.restart_gate(&c.name, None, now) {
                                next = next.min(wait);
                            } else {
                                self.start_container(pod, c, Role::App, 0, &sb.id, &pod_ip, &obs)
                                    .await?;
                                next = now + Duration::from_millis(200);
                            }
                        }
                        Some(State::Running { .. }) => {}
                        // Created but never started (the start failed), or exited and
                        // due for a restart: a new attempt once the back-off allows.
                        Some(State::Created) | Some(State::Exited { .. }) => {
                            let exited = latest.as_ref().and_then(|l| match l.state {
                                State::Exited { code, .. } => Some(code),
                                _ => None,
                            });
                            if exited.is_some_and(|code| !should_restart(&policy, code)) {
                                continue;
                            }
                            if let Some(wait) = self.restart_gate(&c.name, latest.as_ref(), now) {
                                next = next.min(wait);
                            } else if let Some(l) = &latest {
                                if exited.is_some() {
                                    // Keep one dead instance (for logs --previous).
                                    if let Some(prev) = obs.previous(&c.name) {
                                        self.remove(&prev.id).await;
                                    }
                                } else {
                                    self.remove(&l.id).await;
                                }
                                self.start_container(
                                    pod,
                                    c,
                                    Role::App,
                                    attempt(l) + 1,
                                    &sb.id,
                                    &pod_ip,
                                    &obs,
                                )
                                .await?;
                                next = now + Duration::from_millis(200);
                            }
                        }
                    }
                }
                obs = self.observe(&uid).await.map_err(|e| e.to_string())?;
            }
        }

        // Probes of running containers.
        let probe_next = self.probe_all(pod, &obs, &pod_ip).await;
        next = next.min(probe_next);
        // A probe may have stopped a container: the status is of what is there now.
        obs = self.observe(&uid).await.map_err(|e| e.to_string())?;

        // The phase.
        let all_ended = !spec.containers.is_empty()
            && spec
                .containers
                .iter()
                .all(|c| match obs.latest(&c.name).map(|x| &x.state) {
                    Some(State::Exited { code, .. }) => !should_restart(&policy, *code),
                    _ => false,
                });
        let phase = if let Some(p) = self.finished {
            p
        } else if init_failed {
            Phase::Failed
        } else if all_ended {
            let ok = spec.containers.iter().all(|c| {
                matches!(
                    obs.latest(&c.name).map(|x| &x.state),
                    Some(State::Exited { code: 0, .. })
                )
            });
            if ok {
                Phase::Succeeded
            } else {
                Phase::Failed
            }
        } else if initialized
            && spec
                .containers
                .iter()
                .all(|c| obs.latest(&c.name).is_some())
        {
            Phase::Running
        } else {
            Phase::Pending
        };
        if phase.terminal() && self.finished.is_none() {
            self.finished = Some(phase);
            // As the kubelet: a finished pod's sandbox is stopped; its containers stay
            // for their logs until the pod is deleted.
            if let Some(sb) = &sandbox {
                let _ = self.rt.stop(&sb.id, Duration::from_secs(1)).await;
                let _ = self.cache.refresh(&sb.id).await;
            }
        }

        let status = self.status(pod, &obs, phase, initialized, &pod_ip);
        self.report(pod, status).await?;
        Ok(next)
    }

    /// `Some(when)` if the container must wait before (re)starting; records the back-off.
    fn restart_gate(
        &mut self,
        name: &str,
        latest: Option<&Container>,
        now: Instant,
    ) -> Option<Instant> {
        let Some(latest) = latest else {
            return self
                .backoff
                .get(name)
                .map(|b| b.not_before)
                .filter(|t| *t > now);
        };
        let ran = self
            .seen_running
            .get(&latest.id)
            .map(|t| now.saturating_duration_since(*t));
        let initial = self.settings.backoff_initial;
        let max = self.settings.backoff_max;
        let b = self.backoff.entry(name.to_string());
        match b {
            std::collections::hash_map::Entry::Vacant(v) => {
                // First restart: at once; the next one waits `initial` from now.
                v.insert(Backoff {
                    delay: (initial * 2).min(max),
                    waited: initial,
                    not_before: now + initial,
                });
                None
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let b = o.get_mut();
                if ran.is_some_and(|r| r >= BACKOFF_RESET) {
                    b.delay = initial;
                    b.waited = Duration::ZERO;
                    b.not_before = now;
                    return None;
                }
                if b.not_before > now {
                    self.waiting.insert(
                        name.to_string(),
                        Waiting {
                            reason: "CrashLoopBackOff",
                            message: format!(
                                "back-off {}s restarting failed container={name}",
                                b.waited.as_secs_f64().ceil()
                            ),
                        },
                    );
                    return Some(b.not_before);
                }
                b.not_before = now + b.delay;
                b.waited = b.delay;
                b.delay = (b.delay * 2).min(max);
                None
            }
        }
    }

    /// Arms the back-off of a container whose start failed before it ran.
    fn failed_start(&mut self, name: &str, reason: &'static str, message: String) {
        let initial = self.settings.backoff_initial;
        let max = self.settings.backoff_max;
        let now = Instant::now();
        let b = self.backoff.entry(name.to_string()).or_insert(Backoff {
            delay: initial,
            waited: Duration::ZERO,
            not_before: now,
        });
        b.not_before = now + b.delay;
        b.waited = b.delay;
        b.delay = (b.delay * 2).min(max);
        self.waiting
            .insert(name.to_string(), Waiting { reason, message });
    }

    async fn new_sandbox(&mut self, pod: &Pod, obs: &Observed) -> Result<(), String> {
        // Whatever ran in the old network namespace goes with it, as in Kubernetes.
        for c in obs.all() {
            self.remove(&c.id).await;
        }
        self.probes.clear();
        let at = obs.sandbox().map(|s| attempt(s) + 1).unwrap_or(0);
        let s = &self.settings;
        if let Err(e) = self.prepare_volumes(pod).await {
            self.waiting_all(pod, "CreateContainerConfigError", e.clone());
            return Err(e);
        }
        self.rt
            .ensure_network(&s.network)
            .await
            .map_err(|e| e.to_string())?;
        let spec = pod::sandbox_spec(&s.agent(), pod, &s.sandbox_image, &s.network, at);
        let id = self
            .rt
            .create(&spec)
            .await
            .map_err(|e| format!("creating sandbox: {e}"))?;
        let started = self
            .rt
            .start(&id)
            .await
            .map_err(|e| format!("starting sandbox: {e}"));
        self.cache.refresh(&id).await.map_err(|e| e.to_string())?;
        started
    }

    fn waiting_all(&mut self, pod: &Pod, reason: &'static str, message: String) {
        for c in pod::all_containers(pod) {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason,
                    message: message.clone(),
                },
            );
        }
    }

    /// Reads the ConfigMaps and Secrets the pod references (missing optional ones skipped).
    async fn refs(&self, pod: &Pod) -> Result<Refs, String> {
        let (ns, _, _) = pod::identity(pod);
        let (cms, secrets) = pod::references(pod);
        let mut refs = Refs::default();
        for (name, optional) in cms {
            match self.client.get("configmaps", ns, &name).await {
                Ok(v) => {
                    let cm: ConfigMap = serde_json::from_value(v)
                        .map_err(|e| format!("configmap {name:?}: {e}"))?;
                    let mut data: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    for (k, v) in cm.binary_data.unwrap_or_default() {
                        data.insert(k, v.0);
                    }
                    refs.config_maps.insert(name, data);
                }
                Err(e) if e.code() == Some(Code::NotFound) && optional => {}
                Err(e) if e.code() == Some(Code::NotFound) => {}
                Err(e) => return Err(format!("reading configmap {name:?}: {e}")),
            }
        }
        for (name, optional) in secrets {
            match self.client.get("secrets", ns, &name).await {
                Ok(v) => {
                    let s: Secret =
                        serde_json::from_value(v).map_err(|e| format!("secret {name:?}: {e}"))?;
                    let mut data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    for (k, v) in s.string_data.unwrap_or_default() {
                        data.insert(k, v.into_bytes());
                    }
                    refs.secrets.insert(name, data);
                }
                Err(e) if e.code() == Some(Code::NotFound) && optional => {}
                Err(e) if e.code() == Some(Code::NotFound) => {}
                Err(e) => return Err(format!("reading secret {name:?}: {e}")),
            }
        }
        Ok(refs)
    }

    /// Makes emptyDir directories and writes configMap and secret volumes.
    async fn prepare_volumes(&self, pod: &Pod) -> Result<(), String> {
        let (_, _, uid) = pod::identity(pod);
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        if volumes.is_empty() {
            return Ok(());
        }
        let refs = self.refs(pod).await?;
        for v in &volumes {
            if v.host_path.is_some() {
                continue;
            }
            let dir = pod::volume_dir(&self.settings.root, uid, &v.name);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| format!("volume {:?}: creating {}: {e}", v.name, dir.display()))?;
            if v.empty_dir.is_some() {
                // Writable by any user the image runs as, as emptyDir is.
                set_mode(&dir, 0o777).await?;
                continue;
            }
            let files = pod::projected_files(pod, v, &refs).map_err(|e| e.to_string())?;
            for (path, bytes, mode) in files {
                let f = dir.join(&path);
                if let Some(parent) = f.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| format!("volume {:?}: {e}", v.name))?;
                }
                tokio::fs::write(&f, &bytes)
                    .await
                    .map_err(|e| format!("volume {:?}: writing {}: {e}", v.name, f.display()))?;
                set_mode(&f, mode).await?;
            }
        }
        Ok(())
    }

    /// Creates and starts attempt `at` of container `c`; a configuration or image problem
    /// is reported in the container's waiting state, not as a failed pass.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &KContainer,
        role: Role,
        at: u32,
        sandbox_id: &str,
        pod_ip: &str,
        obs: &Observed,
    ) -> Result<(), String> {
        let image = c.image.clone().unwrap_or_default();
        if let Err((reason, message)) = self
            .ensure_image(&image, c.image_pull_policy.as_deref())
            .await
        {
            self.failed_start(&c.name, reason, message);
            return Ok(());
        }
        let refs = self.refs(pod).await?;
        let facts = PodFacts {
            pod_ip: pod_ip.to_string(),
            host_ip: self.settings.host_ip.clone(),
        };
        let s = &self.settings;
        let spec = match pod::container_spec(
            &s.agent(),
            pod,
            c,
            role,
            at,
            sandbox_id,
            &refs,
            &facts,
            &s.root,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                self.failed_start(&c.name, "CreateContainerConfigError", e.to_string());
                return Ok(());
            }
        };
        // A container of this name left over from an interrupted start.
        if let Some(old) = obs.all().find(|x| x.name == spec.name) {
            self.remove(&old.id).await;
        }
        let id = match self.rt.create(&spec).await {
            Ok(id) => id,
            Err(RtError::ImageMissing(i)) => {
                self.failed_start(
                    &c.name,
                    "ErrImageNeverPull",
                    format!("image {i:?} is not present on this node"),
                );
                return Ok(());
            }
            Err(e) => {
                self.failed_start(&c.name, "CreateContainerError", e.to_string());
                return Ok(());
            }
        };
        let started = self.rt.start(&id).await;
        self.cache.refresh(&id).await.map_err(|e| e.to_string())?;
        if let Err(e) = started {
            self.failed_start(&c.name, "RunContainerError", e.to_string());
            return Ok(());
        }
        self.waiting.remove(&c.name);
        self.event(
            pod,
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        )
        .await;
        tracing::info!(pod = %format!("{}/{}", pod::identity(pod).0, pod::identity(pod).1), container = %c.name, attempt = at, "container started");
        Ok(())
    }

    /// Applies imagePullPolicy: `Err((reason, message))` when the image cannot be had.
    async fn ensure_image(
        &self,
        image: &str,
        policy: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let present = self
            .rt
            .has_image(image)
            .await
            .map_err(|e| ("ErrImagePull", e.to_string()))?;
        let latest =
            !image.rsplit('/').next().unwrap_or(image).contains(':') || image.ends_with(":latest");
        let policy = policy.unwrap_or(if latest { "Always" } else { "IfNotPresent" });
        let want_pull = match policy {
            "Never" => false,
            "Always" => true,
            _ => !present,
        };
        if policy == "Never" && !present {
            return Err((
                "ErrImageNeverPull",
                format!("Container image {image:?} is not present with pull policy of Never"),
            ));
        }
        if want_pull && self.settings.pulls {
            match self.rt.pull(image).await {
                Ok(()) => return Ok(()),
                // No registry reachable: a local copy still serves.
                Err(e) if present => {
                    tracing::debug!(image, error = %e, "pull failed; using the local image");
                    return Ok(());
                }
                Err(e) => return Err(("ImagePullBackOff", e.to_string())),
            }
        }
        if present {
            Ok(())
        } else {
            Err((
                "ErrImageNeverPull",
                format!("Container image {image:?} is not present on this node and this node does not pull images"),
            ))
        }
    }

    /// Runs the probes that are due; returns when the next one is due.
    async fn probe_all(&mut self, pod: &Pod, obs: &Observed, pod_ip: &str) -> Instant {
        let now = Instant::now();
        let mut next = now + RESYNC;
        let spec = pod.spec.clone().unwrap_or_default();
        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
        let mut live_ids = Vec::new();
        for c in &spec.containers {
            let Some(latest) = obs.latest(&c.name) else {
                continue;
            };
            if !latest.state.running() {
                continue;
            }
            live_ids.push(latest.id.clone());
            self.seen_running.entry(latest.id.clone()).or_insert(now);
            let entry = self.probes.entry(c.name.clone());
            let p = match entry {
                std::collections::hash_map::Entry::Occupied(o) if o.get().id == latest.id => {
                    o.into_mut()
                }
                e => {
                    let fresh = Probes {
                        id: latest.id.clone(),
                        startup: c.startup_probe.clone().map(|p| Tracker::new(p, now, false)),
                        liveness: c.liveness_probe.clone().map(|p| Tracker::new(p, now, true)),
                        readiness: c
                            .readiness_probe
                            .clone()
                            .map(|p| Tracker::new(p, now, false)),
                    };
                    match e {
                        std::collections::hash_map::Entry::Occupied(mut o) => {
                            o.insert(fresh);
                            o.into_mut()
                        }
                        std::collections::hash_map::Entry::Vacant(v) => v.insert(fresh),
                    }
                }
            };
            let started = p.started();
            let mut kill: Option<String> = None;
            let mut events: Vec<(&str, &str, String)> = Vec::new();
            for (kind, tracker) in [
                ("Startup", &mut p.startup),
                ("Liveness", &mut p.liveness),
                ("Readiness", &mut p.readiness),
            ] {
                let Some(t) = tracker.as_mut() else { continue };
                // Until the startup probe passes, the others wait.
                if kind != "Startup" && !started {
                    continue;
                }
                if kind == "Startup" && t.passing {
                    continue;
                }
                if t.due() <= now {
                    let outcome = t.run(self.rt.as_ref(), &latest.id, pod_ip, c).await;
                    let failed = matches!(outcome, Outcome::Failure(_));
                    let changed = t.record(Instant::now(), outcome);
                    if failed {
                        let why = t.last_failure.clone().unwrap_or_default();
                        tracing::debug!(container = %c.name, probe = kind, %why, "probe failed");
                        if changed || kind != "Readiness" {
                            events.push((
                                "Warning",
                                "Unhealthy",
                                format!("{kind} probe failed: {why}"),
                            ));
                        }
                    }
                    // Liveness and startup probes restart the container once they have
                    // failed failureThreshold times in a row, never before.
                    if failed && kind != "Readiness" && t.exhausted() {
                        kill = Some(format!(
                            "Container {} failed {} probe, will be restarted",
                            c.name,
                            kind.to_lowercase()
                        ));
                    }
                }
                next = next.min(t.due());
            }
            for (kind, reason, msg) in events {
                self.event(pod, kind, reason, &msg).await;
            }
            if let Some(msg) = kill {
                self.event(pod, "Normal", "Killing", &msg).await;
                tracing::info!(container = %c.name, "{msg}");
                let id = latest.id.clone();
                self.probes.remove(&c.name);
                if let Err(e) = self
                    .rt
                    .stop(&id, Duration::from_secs(u64::try_from(grace).unwrap_or(0)))
                    .await
                {
                    tracing::warn!(container = %c.name, error = %e, "stopping unhealthy container failed");
                }
                if let Err(e) = self.cache.refresh(&id).await {
                    tracing::debug!(container = %c.name, error = %e, "refreshing a stopped container failed");
                }
                next = Instant::now();
            }
        }
        self.probes.retain(|_, p| live_ids.contains(&p.id));
        self.seen_running
            .retain(|id, _| obs.all().any(|c| &c.id == id));
        next
    }

    fn container_status(&self, c: &KContainer, obs: &Observed, init: bool) -> (Value, bool) {
        let latest = obs.latest(&c.name);
        let terminated = |x: &Container| match &x.state {
            State::Exited {
                code,
                oom_killed,
                started_at,
                finished_at,
                error,
            } => {
                let reason = if *oom_killed {
                    "OOMKilled"
                } else if *code == 0 {
                    "Completed"
                } else if !error.is_empty() {
                    "ContainerCannotRun"
                } else {
                    "Error"
                };
                let mut t = json!({"exitCode": code, "reason": reason, "startedAt": started_at,
                    "finishedAt": finished_at, "containerID": format!("docker://{}", x.id)});
                if !error.is_empty() {
                    t["message"] = json!(error);
                }
                Some(json!({"terminated": t}))
            }
            _ => None,
        };
        let restarts = latest.map(attempt).unwrap_or(0);
        let mut ready = false;
        let mut started = false;
        let state = match (latest.map(|x| &x.state), self.waiting.get(&c.name)) {
            (Some(State::Running { started_at }), _) => {
                let p = self
                    .probes
                    .get(&c.name)
                    .filter(|p| latest.is_some_and(|l| l.id == p.id));
                // Without trackers yet (or any more), only a container with no such
                // probe counts as started or ready.
                started = p.map_or(c.startup_probe.is_none(), Probes::started);
                ready = !init
                    && p.map_or(
                        c.startup_probe.is_none() && c.readiness_probe.is_none(),
                        Probes::ready,
                    );
                json!({"running": {"startedAt": started_at}})
            }
            (Some(State::Exited { .. }), Some(w)) if self.finished.is_none() => {
                json!({"waiting": {"reason": w.reason, "message": w.message}})
            }
            (Some(State::Exited { .. }), _) => latest.and_then(terminated).unwrap_or(json!({})),
            (_, Some(w)) => json!({"waiting": {"reason": w.reason, "message": w.message}}),
            _ => {
                json!({"waiting": {"reason": if init { "PodInitializing" } else { "ContainerCreating" }}})
            }
        };
        let last = match latest.map(|x| &x.state) {
            // Waiting to restart: the last run is the latest instance.
            Some(State::Exited { .. }) if state.get("waiting").is_some() => {
                latest.and_then(terminated)
            }
            _ => obs.previous(&c.name).and_then(terminated),
        };
        let mut s = json!({"name": c.name, "image": c.image, "imageID": latest.map(|l| l.image_id.clone()).unwrap_or_default(),
            "ready": ready, "started": started, "restartCount": restarts, "state": state,
            "lastState": last.unwrap_or(json!({}))});
        if let Some(l) = latest {
            s["containerID"] = json!(format!("docker://{}", l.id));
        }
        (s, ready)
    }

    fn status(
        &self,
        pod: &Pod,
        obs: &Observed,
        phase: Phase,
        initialized: bool,
        pod_ip: &str,
    ) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut all_ready = !spec.containers.is_empty();
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                let (s, ready) = self.container_status(c, obs, false);
                all_ready &= ready;
                s
            })
            .collect();
        let init: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, obs, true).0)
            .collect();
        if phase.terminal() {
            all_ready = false;
        }
        let old = pod.status.as_ref();
        let cond = |t: &str, ok: bool, reason: Option<&str>| {
            // Keep the transition time while the status holds.
            let prev = old
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == t));
            let status = if ok { "True" } else { "False" };
            let at = prev
                .filter(|p| p.status == status)
                .and_then(|p| p.last_transition_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_else(now_rfc3339);
            let mut c = json!({"type": t, "status": status, "lastTransitionTime": at, "lastProbeTime": null});
            if let Some(r) = reason.filter(|_| !ok) {
                c["reason"] = json!(r);
            }
            c
        };
        let not_ready = if phase.terminal() {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let mut status = json!({
            "phase": phase.as_str(),
            "hostIP": self.settings.host_ip,
            "hostIPs": [{"ip": self.settings.host_ip}],
            "startTime": self.start_time,
            "qosClass": crate::pod::pod_qos_class(pod),
            "conditions": [
                cond("PodScheduled", true, None),
                cond("Initialized", initialized || phase.terminal(), Some("ContainersNotInitialized")),
                cond("ContainersReady", all_ready, Some(not_ready)),
                cond("Ready", all_ready, Some(not_ready)),
            ],
            "containerStatuses": statuses,
        });
        if !init.is_empty() {
            status["initContainerStatuses"] = json!(init);
        }
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        status
    }

    async fn report(&mut self, pod: &Pod, status: Value) -> Result<(), String> {
        if self.reported.as_ref() == Some(&status) {
            return Ok(());
        }
        let (ns, name, _) = pod::identity(pod);
        match self
            .client
            .patch("pods", ns, name, "status", &json!({"status": status}))
            .await
        {
            Ok(_) => {
                self.reported = Some(status);
                Ok(())
            }
            // Deleted meanwhile: the cache will say so.
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(format!("writing pod status: {e}")),
        }
    }

    /// Graceful termination: SIGTERM to every container, SIGKILL after the grace period,
    /// then the sandbox; the pod object is removed once its containers are gone.
    async fn terminate(&mut self, pod: &Pod) -> Result<(), String> {
        let (ns, name, _) = pod::identity(pod);
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0);
        let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        self.event(
            pod,
            "Normal",
            "Killing",
            &format!("Stopping pod {ns}/{name} (grace period {grace:?})"),
        )
        .await;
        self.teardown_by_uid(grace).await;
        let uid = self.uid();
        let left = self
            .rt
            .list(LABEL_POD_UID, &uid)
            .await
            .map_err(|e| e.to_string())?;
        for c in self.cache.pod(&uid) {
            self.cache.forget(&c.id);
        }
        if !left.is_empty() {
            return Err("containers still present after removal".into());
        }
        match self.client.delete("pods", ns, name, Some(0)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(format!("deleting pod object: {e}")),
        }
    }

    /// Stops (SIGTERM, SIGKILL after `grace`) and removes every container of the pod, and
    /// its volume directory.
    async fn teardown_by_uid(&mut self, grace: Duration) {
        let uid = self.uid();
        if uid.is_empty() {
            return;
        }
        teardown(self.rt.as_ref(), &self.settings, &uid, grace).await;
    }
}

/// Stops and removes every container of pod `uid` on this node, apps first, then the
/// sandbox, and removes the pod's volume directory.
pub(crate) async fn teardown<R: ContainerRuntime>(
    rt: &R,
    s: &Settings,
    uid: &str,
    grace: Duration,
) {
    let cs = match rt.list(LABEL_POD_UID, uid).await {
        Ok(cs) => cs,
        Err(e) => {
            tracing::warn!(pod_uid = uid, error = %e, "listing containers to remove failed");
            return;
        }
    };
    let obs = Observed::new(cs, &s.agent_id);
    let apps: Vec<&Container> = obs.by_name.values().flatten().collect();
    futures::future::join_all(
        apps.iter()
            .filter(|c| c.state.running())
            .map(|c| rt.stop(&c.id, grace)),
    )
    .await;
    for c in &obs.sandboxes {
        if c.state.running() {
            let _ = rt.stop(&c.id, Duration::from_secs(1)).await;
        }
    }
    for c in obs.all() {
        if let Err(e) = rt.remove(&c.id).await {
            tracing::warn!(container = %c.name, error = %e, "removing container failed");
        }
    }
    let dir = s.root.join("pods").join(uid);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "removing pod directory failed");
        }
    }
}

impl<R> Worker<R> {
    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let (ns, name, uid) = pod::identity(pod);
        let now = now_rfc3339();
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "reason": reason, "type": kind, "message": message, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": "kubelet", "host": self.settings.node},
            "reportingComponent": "kubelet", "reportingInstance": self.settings.node});
        // Best effort, bounded: an event never holds up the pod.
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.client.create("events", ns, &ev),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, reason, "posting event failed"),
            Err(_) => tracing::debug!(reason, "posting event timed out"),
        }
    }
}

async fn set_mode(path: &std::path::Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}
