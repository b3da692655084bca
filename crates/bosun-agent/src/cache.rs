//! The agent's view of its containers, as the kubelet's PLEG keeps it: one cheap list every
//! second, an inspect only for containers that are new or changed state. Pod workers read
//! it instead of asking the runtime on every pass, and are woken when their pod's containers
//! change, so the runtime's load does not grow with the number of pods.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pod::{LABEL_AGENT, LABEL_POD_UID};
use crate::runtime::{Container, ContainerRuntime, Result, State};

/// How often the runtime is listed.
pub const RELIST: Duration = Duration::from_secs(1);

struct Entry {
    container: Container,
    /// When it was inspected.
    at: Instant,
    /// The generation of the list or refresh that wrote it: a list that began before a
    /// worker's refresh must not drop what the worker just made.
    stamp: u64,
}

/// How long a container killed by SIGKILL is re-read: Docker may record that it was the
/// OOM killer only after it reports the exit.
const OOM_SETTLE: Duration = Duration::from_secs(5);

impl Entry {
    /// Exited by SIGKILL, not (yet) known as OOM-killed, and read only just now.
    fn unsettled(&self) -> bool {
        matches!(
            self.container.state,
            State::Exited {
                code: 137,
                oom_killed: false,
                ..
            }
        ) && self.at.elapsed() < OOM_SETTLE
    }
}

#[derive(Default)]
struct Inner {
    containers: HashMap<String, Entry>,
    wakers: HashMap<String, Arc<Notify>>,
    generation: u64,
}

/// The cache (share it in an `Arc`).
pub struct Cache<R> {
    rt: Arc<R>,
    agent_id: String,
    inner: RwLock<Inner>,
}

fn uid_of(c: &Container) -> Option<&str> {
    c.labels.get(LABEL_POD_UID).map(String::as_str)
}

impl<R: ContainerRuntime> Cache<R> {
    /// An empty cache of the containers labelled with `agent_id`; call [`Cache::relist`]
    /// (or [`Cache::run`]) to fill it.
    pub fn new(rt: Arc<R>, agent_id: &str) -> Arc<Self> {
        Arc::new(Cache {
            rt,
            agent_id: agent_id.to_string(),
            inner: RwLock::new(Inner::default()),
        })
    }

    fn next_generation(&self) -> u64 {
        match self.inner.write() {
            Ok(mut g) => {
                g.generation += 1;
                g.generation
            }
            Err(_) => 0,
        }
    }

    fn wake(&self, uids: &HashSet<String>) {
        if let Ok(g) = self.inner.read() {
            for u in uids {
                if let Some(n) = g.wakers.get(u) {
                    n.notify_one();
                }
            }
        }
    }

    /// Lists the runtime once and brings the cache up to date; wakes the workers whose
    /// pods changed.
    ///
    /// # Errors
    /// When the runtime cannot be listed (the cache is left as it was).
    pub async fn relist(&self) -> Result<()> {
        let started = self.next_generation();
        let listed = self.rt.summaries(LABEL_AGENT, &self.agent_id).await?;
        let listed_ids: HashSet<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        let stale: Vec<String> = {
            let Ok(g) = self.inner.read() else {
                return Ok(());
            };
            listed
                .iter()
                .filter(|(id, kind)| {
                    g.containers
                        .get(id)
                        .is_none_or(|e| e.container.state.kind() != *kind || e.unsettled())
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut fresh = Vec::with_capacity(stale.len());
        for id in &stale {
            if let Some(c) = self.rt.inspect(id).await? {
                fresh.push(c);
            }
        }
        let mut changed: HashSet<String> = HashSet::new();
        if let Ok(mut g) = self.inner.write() {
            let gone: Vec<String> = g
                .containers
                .iter()
                .filter(|(id, e)| !listed_ids.contains(id.as_str()) && e.stamp < started)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(e) = g.containers.remove(&id) {
                    changed.extend(uid_of(&e.container).map(str::to_string));
                }
            }
            for c in fresh {
                // A worker's refresh after this list began is newer: keep it.
                if g.containers.get(&c.id).is_some_and(|e| e.stamp > started) {
                    continue;
                }
                changed.extend(uid_of(&c).map(str::to_string));
                let id = c.id.clone();
                g.containers.insert(
                    id,
                    Entry {
                        container: c,
                        at: Instant::now(),
                        stamp: started,
                    },
                );
            }
        }
        self.wake(&changed);
        Ok(())
    }

    /// Re-reads one container (after the agent changed it).
    ///
    /// # Errors
    /// When the runtime cannot be asked.
    pub async fn refresh(&self, id: &str) -> Result<()> {
        let got = self.rt.inspect(id).await?;
        let stamp = self.next_generation();
        if let Ok(mut g) = self.inner.write() {
            match got {
                Some(c) => {
                    g.containers.insert(
                        id.to_string(),
                        Entry {
                            container: c,
                            at: Instant::now(),
                            stamp,
                        },
                    );
                }
                None => {
                    g.containers.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Drops a container the agent removed.
    pub fn forget(&self, id: &str) {
        if let Ok(mut g) = self.inner.write() {
            g.containers.remove(id);
        }
    }

    /// The containers of pod `uid`.
    pub fn pod(&self, uid: &str) -> Vec<Container> {
        self.inner
            .read()
            .map(|g| {
                g.containers
                    .values()
                    .filter(|e| uid_of(&e.container) == Some(uid))
                    .map(|e| e.container.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pod uids that have containers.
    pub fn pod_uids(&self) -> HashSet<String> {
        self.inner
            .read()
            .map(|g| {
                g.containers
                    .values()
                    .filter_map(|e| uid_of(&e.container).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Containers cached.
    pub fn len(&self) -> usize {
        self.inner.read().map(|g| g.containers.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notified when pod `uid`'s containers change (one waiter: the pod's worker).
    pub fn waker(&self, uid: &str) -> Arc<Notify> {
        match self.inner.write() {
            Ok(mut g) => g
                .wakers
                .entry(uid.to_string())
                .or_insert_with(|| Arc::new(Notify::new()))
                .clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    /// Forgets the waker of a pod whose worker ended.
    pub fn drop_waker(&self, uid: &str) {
        if let Ok(mut g) = self.inner.write() {
            g.wakers.remove(uid);
        }
    }

    /// Relists every [`RELIST`] until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(RELIST);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.relist().await {
                tracing::warn!(error = %e, "listing the runtime's containers failed; next at the next tick");
            }
        }
    }
}
