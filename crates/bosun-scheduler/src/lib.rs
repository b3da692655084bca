//! bosun's scheduler: places unbound pods on nodes, on the Raft leader only, through the
//! resource API (`pods/binding`, a compare-and-swap), every binding fenced by the leader
//! term.
//!
//! Filters: node Ready and schedulable, taints (NoSchedule, NoExecute) tolerated,
//! nodeSelector and required node affinity, required pod affinity and anti-affinity (any
//! topology key), cpu / memory / pod count fit. Score: least allocated, plus preferred node
//! affinity weights, minus a penalty for nodes already running pods of the same owner
//! (spreading replicas). A pod that fits
//! nowhere gets a `FailedScheduling` Event naming why, per reason ("0/5 nodes are
//! available: 3 Insufficient memory, 2 node(s) had untolerated taint"), and is retried
//! whenever pods or nodes change.
#![forbid(unsafe_code)]

mod affinity;

use bosun_api::json::At;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bosun_api::admission::parse_quantity;
use bosun_client::informer::{Changes, Informers};
use bosun_client::Client;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Periodic retry of unschedulable pods.
const RESYNC: Duration = Duration::from_secs(5);
/// Shortest time between two passes: each pass reads every pod and node, so under a
/// flood of new pods it places them in batches rather than a few at a time.
const PASS_GAP: Duration = Duration::from_millis(50);
/// Bindings sent in one call (one store transaction) at most.
const BIND_BATCH: usize = 500;
/// Binding calls in flight at most.
const BATCHES_IN_FLIGHT: usize = 4;

/// The pending bindings of a pass: (namespace, pod, node) and the pod's uid.
type Bindings = Vec<((String, String, String), String)>;

/// Sends `batch` in one call; the uids of the pods it failed to bind.
async fn bind_all(client: Client, batch: Bindings) -> Vec<String> {
    let (triples, uids): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    // Only the outcomes are needed: brief answers.
    match client.brief().bind_batch(&triples).await {
        Ok(results) => results
            .into_iter()
            .zip(uids)
            .filter_map(|(r, uid)| match r {
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(pod = %uid, error = %e, "binding failed; will retry");
                    Some(uid)
                }
            })
            .collect(),
        Err(e) => {
            tracing::debug!(pods = uids.len(), error = %e, "binding call failed; will retry");
            uids
        }
    }
}

/// Free capacity of one node, in milli-units (cpu millicores, memory millibytes) and pods.
#[derive(Debug, Clone, Default, PartialEq)]
struct Room {
    cpu: i128,
    memory: i128,
    pods: i128,
    cpu_total: i128,
    memory_total: i128,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn quantity(v: Option<&Value>) -> i128 {
    match v {
        Some(Value::String(q)) => parse_quantity(q).unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().map_or(0, |n| i128::from(n) * 1000),
        _ => 0,
    }
}

/// cpu and memory a pod requests (sum over its containers; limits stand in for missing
/// requests, as Kubernetes defaults them).
fn requests(pod: &Value) -> (i128, i128) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod
        .at("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let req = c.at("/resources/requests");
        let lim = c.at("/resources/limits");
        let pick = |k: &str| {
            let r = quantity(req.and_then(|r| r.get(k)));
            if r > 0 {
                r
            } else {
                quantity(lim.and_then(|l| l.get(k)))
            }
        };
        cpu += pick("cpu");
        mem += pick("memory");
    }
    (cpu, mem)
}

fn ready(node: &Value) -> bool {
    node.at("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = s(t, "/key").is_empty() || s(t, "/key") == s(taint, "/key");
        let effect_ok = s(t, "/effect").is_empty() || s(t, "/effect") == s(taint, "/effect");
        let value_ok = s(t, "/operator") == "Exists" || s(t, "/value") == s(taint, "/value");
        key_ok && effect_ok && value_ok
    })
}

/// What the filters look at on a pod, read once per pod (not once per node).
struct PodView<'a> {
    requests: (i128, i128),
    tolerations: &'a [Value],
    /// It tolerates node.kubernetes.io/unschedulable (DaemonSet pods): cordoned nodes
    /// take it, as that taint works in Kubernetes.
    tolerates_cordon: bool,
    node_selector: Option<&'a serde_json::Map<String, Value>>,
    node_affinity: bool,
    /// Required pod affinity or anti-affinity.
    inter_pod: bool,
}

/// `requests` is [`requests`] of `pod`, read once per change of it (see [`Facts`]).
fn pod_view(pod: &Value, requests: (i128, i128)) -> PodView<'_> {
    static CORDON: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
        || json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
    );
    let tolerations = pod
        .at("/spec/tolerations")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    PodView {
        requests,
        tolerations,
        tolerates_cordon: tolerates(tolerations, &CORDON),
        node_selector: pod.at("/spec/nodeSelector").and_then(Value::as_object),
        node_affinity: pod.at("/spec/affinity/nodeAffinity").is_some(),
        inter_pod: has_pod_affinity(pod),
    }
}

/// The pod has required pod affinity or anti-affinity rules.
fn has_pod_affinity(pod: &Value) -> bool {
    pod.at("/spec/affinity/podAffinity").is_some()
        || pod.at("/spec/affinity/podAntiAffinity").is_some()
}

fn owner(pod: &Value) -> Option<&str> {
    pod.at("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
}

/// Why a node does not fit a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Unschedulable,
    Taint,
    Selector,
    Cpu,
    Memory,
    Pods,
    PodAffinity,
    PodAntiAffinity,
}

impl Misfit {
    fn text(self) -> &'static str {
        match self {
            Misfit::NotReady => "node(s) were not ready",
            Misfit::Unschedulable => "node(s) were unschedulable",
            Misfit::Taint => "node(s) had untolerated taint",
            Misfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Misfit::Cpu => "Insufficient cpu",
            Misfit::Memory => "Insufficient memory",
            Misfit::Pods => "Too many pods",
            Misfit::PodAffinity => "node(s) didn't match pod affinity rules",
            Misfit::PodAntiAffinity => "node(s) didn't match pod anti-affinity rules",
        }
    }
}

/// What the filters look at on a node.
struct NodeView<'a> {
    name: &'a str,
    ready: bool,
    unschedulable: bool,
    hard_taints: &'a [Value],
    labels: Option<&'a Value>,
}

/// What a pass reads of one node, kept while the cache holds the same node object (like
/// [`Facts`] for pods): a pass over five thousand unchanged nodes reads none of them.
struct NodeFacts {
    /// The cached object these were read from. Held, not read: it keeps the object
    /// alive, so that its address stays its identity (see [`addr`]).
    _node: Arc<Value>,
    name: String,
    ready: bool,
    unschedulable: bool,
    /// NoSchedule and NoExecute taints.
    hard_taints: Vec<Value>,
    labels: Option<Value>,
    /// Its room when empty.
    room: Room,
}

impl NodeFacts {
    fn of(node: &Arc<Value>) -> NodeFacts {
        NodeFacts {
            _node: node.clone(),
            name: s(node, "/metadata/name").to_string(),
            ready: ready(node),
            unschedulable: node.at("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
            hard_taints: node
                .at("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
                .cloned()
                .collect(),
            labels: node.at("/metadata/labels").cloned(),
            room: capacity(node),
        }
    }

    fn view(&self) -> NodeView<'_> {
        NodeView {
            name: &self.name,
            ready: self.ready,
            unschedulable: self.unschedulable,
            hard_taints: &self.hard_taints,
            labels: self.labels.as_ref(),
        }
    }
}

/// A cached object's identity: the cache replaces an object it updates, so the same
/// address held (by a memo, which keeps the object alive) is the same content.
fn addr(v: &Arc<Value>) -> usize {
    Arc::as_ptr(v) as usize
}

#[cfg(test)]
fn fits(pod: &Value, node: &Value, room: &Room) -> Result<(), Misfit> {
    let facts = NodeFacts::of(&Arc::new(node.clone()));
    fits_view(pod, &pod_view(pod, requests(pod)), &facts.view(), room)
}

fn fits_view(pod: &Value, p: &PodView<'_>, node: &NodeView<'_>, room: &Room) -> Result<(), Misfit> {
    if !node.ready {
        return Err(Misfit::NotReady);
    }
    if node.unschedulable && !p.tolerates_cordon {
        return Err(Misfit::Unschedulable);
    }
    if node
        .hard_taints
        .iter()
        .any(|t| !tolerates(p.tolerations, t))
    {
        return Err(Misfit::Taint);
    }
    if let Some(sel) = p.node_selector {
        for (k, v) in sel {
            if node.labels.and_then(|l| l.get(k)) != Some(v) {
                return Err(Misfit::Selector);
            }
        }
    }
    if p.node_affinity && !affinity::node_required(pod, node.name, node.labels) {
        return Err(Misfit::Selector);
    }
    let (cpu, mem) = p.requests;
    if room.pods < 1 {
        return Err(Misfit::Pods);
    }
    if cpu > room.cpu {
        return Err(Misfit::Cpu);
    }
    if mem > room.memory {
        return Err(Misfit::Memory);
    }
    Ok(())
}

/// `part * 100 / total` (`total` > 0), in 64-bit arithmetic when the values fit, as a
/// real node's always do: a 128-bit division costs several times more, and the scheduler
/// scores thousands of nodes a pass.
fn percent(part: i128, total: i128) -> i128 {
    let narrow = i64::try_from(part)
        .ok()
        .and_then(|p| p.checked_mul(100))
        .zip(i64::try_from(total).ok());
    match narrow {
        Some((p, t)) => i128::from(p / t),
        None => part * 100 / total,
    }
}

fn score((cpu, mem): (i128, i128), room: &Room, same_owner_here: usize) -> i128 {
    let free = |free: i128, total: i128, want: i128| {
        if total <= 0 {
            0
        } else {
            percent((free - want).max(0), total)
        }
    };
    let least_allocated =
        (free(room.cpu, room.cpu_total, cpu) + free(room.memory, room.memory_total, mem)) / 2;
    least_allocated - 50 * same_owner_here as i128
}

/// The room a node offers when empty: its allocatable (or capacity).
fn capacity(n: &Value) -> Room {
    let alloc = n
        .at("/status/allocatable")
        .or_else(|| n.at("/status/capacity"));
    let cpu = quantity(alloc.and_then(|a| a.get("cpu")));
    let memory = quantity(alloc.and_then(|a| a.get("memory")));
    let pods = quantity(alloc.and_then(|a| a.get("pods"))) / 1000;
    Room {
        cpu,
        memory,
        pods,
        cpu_total: cpu,
        memory_total: memory,
    }
}

impl Room {
    /// Takes a pod that requests `(cpu, memory)`.
    fn take(&mut self, (cpu, memory): (i128, i128)) {
        self.cpu -= cpu;
        self.memory -= memory;
        self.pods -= 1;
    }
}

/// Free room per node, from the pods that hold room on it: (node, requests) each.
#[cfg(test)]
fn rooms<'a>(
    nodes: &[Arc<Value>],
    holding: impl IntoIterator<Item = (&'a str, (i128, i128))>,
) -> FxHashMap<String, Room> {
    let mut out: FxHashMap<String, Room> = nodes
        .iter()
        .map(|n| (s(n, "/metadata/name").to_string(), capacity(n)))
        .collect();
    for (node, req) in holding {
        if let Some(r) = out.get_mut(node) {
            r.take(req);
        }
    }
    out
}

/// What a pass reads of one pod: kept from pass to pass while the cache holds the same
/// object, so that a pass over ten thousand pods reads (and parses the quantities of)
/// only the pods that changed.
struct Facts {
    /// The cached object these were read from (a changed pod is a new object).
    pod: Arc<Value>,
    node: String,
    requests: (i128, i128),
    owner: Option<String>,
    /// Succeeded or Failed: it holds no room.
    finished: bool,
    deleting: bool,
    /// Ours to place: no node, not being deleted, and for this scheduler.
    waiting: bool,
    /// It has required pod affinity or anti-affinity.
    inter_pod: bool,
}

impl Facts {
    fn of(pod: &Arc<Value>) -> Facts {
        let node = s(pod, "/spec/nodeName").to_string();
        let deleting = pod.at("/metadata/deletionTimestamp").is_some();
        Facts {
            pod: pod.clone(),
            waiting: node.is_empty()
                && !deleting
                && matches!(s(pod, "/spec/schedulerName"), "" | "default-scheduler"),
            node,
            requests: requests(pod),
            inter_pod: has_pod_affinity(pod),
            owner: owner(pod).map(str::to_string),
            finished: matches!(s(pod, "/status/phase"), "Succeeded" | "Failed"),
            deleting,
        }
    }
}

/// [`NodeFacts`] by the address of the node object they were read from. Not
/// `bosun_client::informer::Memo`: that one forgets objects by their reference count, and
/// the node lifecycle controller's memo holds the same node objects, so two such memos
/// would keep each other's stale entries alive. This one forgets what the cache no
/// longer lists.
#[derive(Default)]
struct Nodes {
    by_addr: FxHashMap<usize, NodeFacts>,
}

impl Nodes {
    /// The facts of each of `nodes`, in their order, reading only new and changed ones.
    fn of(&mut self, nodes: &[Arc<Value>]) -> Vec<&NodeFacts> {
        for n in nodes {
            self.by_addr
                .entry(addr(n))
                .or_insert_with(|| NodeFacts::of(n));
        }
        // Each cached node has its entry: any more are nodes gone or replaced.
        if self.by_addr.len() > nodes.len() {
            let live: FxHashSet<usize> = nodes.iter().map(addr).collect();
            self.by_addr.retain(|a, _| live.contains(a));
        }
        nodes
            .iter()
            .filter_map(|n| self.by_addr.get(&addr(n)))
            .collect()
    }
}

/// [`Facts`] per pod uid, and the uid of each object they were read from.
#[derive(Default)]
struct Memo {
    pods: FxHashMap<String, Facts>,
    uids: FxHashMap<usize, String>,
}

impl Memo {
    /// Brings the memo up to the cache's `pods`, reading only new and changed ones: an
    /// object already read is known by its address, without a lookup in it.
    fn refresh(&mut self, pods: &[Arc<Value>]) {
        for p in pods {
            if self.uids.contains_key(&addr(p)) {
                continue;
            }
            let uid = s(p, "/metadata/uid").to_string();
            if let Some(old) = self.pods.insert(uid.clone(), Facts::of(p)) {
                self.uids.remove(&addr(&old.pod));
            }
            self.uids.insert(addr(p), uid);
        }
        // Each cached pod has its entry: any more are pods that are gone.
        if self.pods.len() > pods.len() {
            let live: FxHashSet<usize> = pods.iter().map(addr).collect();
            self.pods.retain(|_, f| live.contains(&addr(&f.pod)));
            self.uids.retain(|a, _| live.contains(a));
        }
    }

    /// The uid and facts of a cached pod the memo was refreshed with.
    fn get(&self, pod: &Arc<Value>) -> Option<(&str, &Facts)> {
        let uid = self.uids.get(&addr(pod))?;
        Some((uid.as_str(), self.pods.get(uid)?))
    }
}

/// How many feasible nodes are enough to pick from: all of them up to 100 nodes, then a
/// share falling from 50 % by one point per 125 nodes to at least 5 %, never fewer than
/// 100 (kube-scheduler's adaptive percentageOfNodesToScore).
fn nodes_to_score(nodes: usize) -> usize {
    if nodes <= 100 {
        return nodes.max(1);
    }
    let pct = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * pct / 100).max(100)
}

/// Runs the scheduler until `cancel`.
pub async fn run(client: Client, informers: Informers, cancel: CancellationToken) {
    let pods = informers.get("pods");
    let nodes = informers.get("nodes");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { pods.wait_synced().await; nodes.wait_synced().await } => {}
    }
    tracing::info!("scheduler started");
    // Pods reported unschedulable, with the message last reported (one Event per change).
    let mut reported: FxHashMap<String, String> = FxHashMap::default();
    // Bindings made but not yet seen in the cache: pod uid -> node.
    let mut placed: FxHashMap<String, String> = FxHashMap::default();
    // Where the next pod's search through the nodes starts.
    let mut offset = 0usize;
    // Binding calls in flight. They outlive the pass that sent them: the next pass
    // decides while they are written (their pods count as placed until the cache shows
    // them bound, or the call reports them failed). Dropped, so cancelled, with the loop.
    let mut binds: JoinSet<Vec<String>> = JoinSet::new();
    let mut memo = Memo::default();
    let mut node_memo = Nodes::default();
    let mut changes = Changes::new(vec![pods.subscribe(), nodes.subscribe()]);
    loop {
        let pass_started = std::time::Instant::now();
        let all_pods = pods.list();
        let all_nodes = nodes.list();
        memo.refresh(&all_pods);
        // Most changes are to bound pods (status reports): with nothing to place, the
        // pass ends here, before the work that reads every pod and node.
        let waiting = memo
            .pods
            .iter()
            .any(|(uid, f)| f.waiting && !placed.contains_key(uid));
        'pass: {
            if !waiting {
                break 'pass;
            }
            placed.retain(|uid, _| memo.pods.get(uid).is_some_and(|f| f.node.is_empty()));
            let node_facts = node_memo.of(&all_nodes);
            let views: Vec<NodeView<'_>> = node_facts.iter().map(|f| f.view()).collect();
            let at: FxHashMap<&str, usize> =
                views.iter().enumerate().map(|(i, v)| (v.name, i)).collect();
            // Where each pod holds room: its node, or where we bound it and the cache
            // does not show yet.
            let node_of = |uid: &str, f: &Facts| -> Option<usize> {
                let node = placed.get(uid).map_or(f.node.as_str(), String::as_str);
                at.get(node).copied()
            };
            // Free room by node index (no lookup by name in the loop over nodes).
            let mut slots: Vec<Room> = node_facts.iter().map(|f| f.room.clone()).collect();
            // owner uid -> node index -> pods of that owner there.
            // Keyed by owner uids, which pod authors write: std's seeded hasher, so that
            // crafted uids cannot collide (FxHash has no seed).
            let mut per_owner: HashMap<&str, FxHashMap<usize, usize>> = HashMap::new();
            let mut inter_pod = false;
            for (uid, f) in &memo.pods {
                inter_pod |= f.waiting && f.inter_pod;
                let Some(i) = node_of(uid, f) else { continue };
                if !f.finished {
                    slots[i].take(f.requests);
                }
                if let Some(o) = &f.owner {
                    *per_owner.entry(o).or_default().entry(i).or_default() += 1;
                }
            }
            let enough = nodes_to_score(views.len());
            // The pods on each node, for pod (anti-)affinity: only when a pod asks.
            let mut index = inter_pod.then(|| {
                let mut index = affinity::PodIndex::default();
                for v in &views {
                    index.labels.insert(v.name, v.labels);
                }
                for (uid, f) in &memo.pods {
                    if f.deleting || f.finished {
                        continue;
                    }
                    if let Some(i) = node_of(uid, f) {
                        index
                            .pods
                            .entry(views[i].name.to_string())
                            .or_default()
                            .push(f.pod.clone());
                    }
                }
                index
            });
            // In the cache's order (namespace, name): placement does not depend on how
            // the memo is laid out.
            let unbound: Vec<(&Arc<Value>, &str, &Facts)> = all_pods
                .iter()
                .filter_map(|p| {
                    memo.get(p)
                        .filter(|(uid, f)| f.waiting && !placed.contains_key(*uid))
                        .map(|(uid, f)| (p, uid, f))
                })
                .collect();
            let mut placed_now = 0usize;
            // Bindings go out in batches (one store transaction each), a few at a time.
            let mut pending: Bindings = Vec::new();
            for (pod, uid, facts) in unbound {
                if cancel.is_cancelled() {
                    break;
                }
                let pv = pod_view(pod, facts.requests);
                let req = pv.requests;
                let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
                // (score, node index)
                let mut best: Option<(i128, usize)> = None;
                // Like kube-scheduler's percentageOfNodesToScore: in a large cluster, score the
                // first feasible nodes found from a rotating start, not all of them.
                let mut feasible = 0usize;
                let start = offset % views.len().max(1);
                offset = offset.wrapping_add(1);
                let mine = facts
                    .owner
                    .as_deref()
                    .and_then(|o| per_owner.get(o))
                    .filter(|m| !m.is_empty());
                for i in (start..views.len()).chain(0..start) {
                    if feasible >= enough {
                        break;
                    }
                    let n = &views[i];
                    let r = &slots[i];
                    let fit = fits_view(pod, &pv, n, r).and_then(|()| {
                        if !pv.inter_pod {
                            return Ok(());
                        }
                        let Some(index) = &index else { return Ok(()) };
                        affinity::inter_pod(pod, n.labels, index).map_err(|e| match e {
                            affinity::InterPod::Affinity => Misfit::PodAffinity,
                            affinity::InterPod::AntiAffinity => Misfit::PodAntiAffinity,
                        })
                    });
                    match fit {
                        Ok(()) => {
                            feasible += 1;
                            let same = mine.and_then(|m| m.get(&i)).copied().unwrap_or(0);
                            let sc = score(req, r, same)
                                + if pv.node_affinity {
                                    affinity::node_preferred(pod, n.name, n.labels)
                                } else {
                                    0
                                };
                            // Ties go to the first node by name. The views are in name
                            // order (the node cache is keyed by name), so that is the
                            // lower index: no string comparison per tie, and on a
                            // cluster of alike empty nodes nearly every node ties.
                            if best.is_none_or(|(b, bi)| sc > b || (sc == b && i < bi)) {
                                best = Some((sc, i));
                            }
                        }
                        Err(m) => *misfits.entry(m).or_default() += 1,
                    }
                }
                let ns = s(pod, "/metadata/namespace").to_string();
                let name = s(pod, "/metadata/name").to_string();
                let uid = uid.to_string();
                match best {
                    Some((_, i)) => {
                        let node = views[i].name.to_string();
                        slots[i].take(req);
                        if let Some(o) = facts.owner.as_deref() {
                            *per_owner.entry(o).or_default().entry(i).or_default() += 1;
                        }
                        reported.remove(&uid);
                        placed.insert(uid.clone(), node.clone());
                        placed_now += 1;
                        if let Some(index) = &mut index {
                            index
                                .pods
                                .entry(node.clone())
                                .or_default()
                                .push((*pod).clone());
                        }
                        pending.push(((ns, name, node), uid));
                        if pending.len() >= BIND_BATCH {
                            room_for_a_call(&mut binds, &mut placed).await;
                            binds.spawn(bind_all(client.clone(), std::mem::take(&mut pending)));
                        }
                    }
                    None => {
                        let mut parts: Vec<String> = misfits
                            .iter()
                            .map(|(m, n)| format!("{n} {}", m.text()))
                            .collect();
                        parts.sort();
                        let msg = format!(
                            "0/{} nodes are available: {}.",
                            all_nodes.len(),
                            if parts.is_empty() {
                                "no nodes registered".to_string()
                            } else {
                                parts.join(", ")
                            }
                        );
                        if reported.get(&uid) != Some(&msg) {
                            if let Err(e) = unschedulable(&client, pod, &msg).await {
                                tracing::debug!(error = %e, "recording FailedScheduling failed");
                            }
                            reported.insert(uid, msg);
                        }
                    }
                }
            }
            if !pending.is_empty() {
                room_for_a_call(&mut binds, &mut placed).await;
                binds.spawn(bind_all(client.clone(), pending));
            }
            tracing::debug!(
                pods = all_pods.len(),
                nodes = all_nodes.len(),
                placed = placed_now,
                binding_calls = binds.len(),
                took_ms = pass_started.elapsed().as_millis() as u64,
                "scheduling pass"
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            // A binding call ended: its failed pods are waiting again.
            Some(r) = binds.join_next(), if !binds.is_empty() => {
                forget_failed(r, &mut placed);
                while let Some(r) = binds.try_join_next() {
                    forget_failed(r, &mut placed);
                }
            }
            _ = changes.next_or(RESYNC) => tokio::time::sleep(PASS_GAP).await,
        }
    }
}

/// Waits until fewer than [`BATCHES_IN_FLIGHT`] binding calls are in flight.
async fn room_for_a_call(binds: &mut JoinSet<Vec<String>>, placed: &mut FxHashMap<String, String>) {
    while binds.len() >= BATCHES_IN_FLIGHT {
        match binds.join_next().await {
            Some(r) => forget_failed(r, placed),
            None => break,
        }
    }
}

/// Drops the pods a binding call failed to bind from `placed`: they wait to be placed
/// again.
fn forget_failed(
    r: std::result::Result<Vec<String>, tokio::task::JoinError>,
    placed: &mut FxHashMap<String, String>,
) {
    match r {
        Ok(failed) => {
            for uid in failed {
                placed.remove(&uid);
            }
        }
        Err(e) => tracing::warn!(error = %e, "a binding call ended abnormally"),
    }
}

async fn unschedulable(client: &Client, pod: &Value, msg: &str) -> bosun_client::Result<()> {
    let ns = s(pod, "/metadata/namespace");
    let now = now();
    let ev = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", s(pod, "/metadata/name")), "namespace": ns},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": s(pod, "/metadata/name"), "uid": s(pod, "/metadata/uid")},
        "reason": "FailedScheduling", "type": "Warning", "message": msg, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler"});
    client.create("events", ns, &ev).await.map(|_| ())
}

/// The current time, RFC 3339 in seconds (UTC).
fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    #[test]
    fn a_pod_fits_where_there_is_room_and_nowhere_else() {
        let nodes = vec![node("a", "1", "1Gi"), node("b", "4", "8Gi")];
        let room = rooms(&nodes, []);
        let p = pod("2", "1Gi");
        assert_eq!(fits(&p, &nodes[0], &room["a"]), Err(Misfit::Cpu));
        assert_eq!(fits(&p, &nodes[1], &room["b"]), Ok(()));
        let big = pod("1", "16Gi");
        assert_eq!(fits(&big, &nodes[1], &room["b"]), Err(Misfit::Memory));
    }

    #[test]
    fn bound_pods_use_up_room() {
        let nodes = vec![node("a", "2", "2Gi")];
        let mut bound = pod("1500m", "1Gi");
        bound["spec"]["nodeName"] = json!("a");
        let room = rooms(&nodes, [("a", requests(&bound))]);
        assert_eq!(
            fits(&pod("600m", "100Mi"), &nodes[0], &room["a"]),
            Err(Misfit::Cpu)
        );
        assert_eq!(fits(&pod("500m", "100Mi"), &nodes[0], &room["a"]), Ok(()));
    }

    #[test]
    fn taints_selectors_and_readiness_filter() {
        let mut tainted = (*node("t", "4", "4Gi")).clone();
        tainted["spec"] =
            json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]});
        let room = Room {
            cpu: 4000,
            memory: 1 << 40,
            pods: 10,
            cpu_total: 4000,
            memory_total: 1 << 40,
        };
        let p = pod("1", "1Mi");
        assert_eq!(fits(&p, &tainted, &room), Err(Misfit::Taint));
        let mut tol = p.clone();
        tol["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
        assert_eq!(fits(&tol, &tainted, &room), Ok(()));
        let mut sel = p.clone();
        sel["spec"]["nodeSelector"] = json!({"disk": "hdd"});
        assert_eq!(
            fits(&sel, &node("n", "4", "4Gi"), &room),
            Err(Misfit::Selector)
        );
        let mut down = (*node("d", "4", "4Gi")).clone();
        down["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        assert_eq!(fits(&p, &down, &room), Err(Misfit::NotReady));
    }

    #[test]
    fn the_memo_rereads_changed_pods_and_forgets_gone_ones() {
        let with_uid = |uid: &str| {
            let mut p = pod("100m", "10Mi");
            p["metadata"] =
                json!({"uid": uid, "ownerReferences": [{"uid": "rs", "controller": true}]});
            p
        };
        let mut a = with_uid("a");
        let first = vec![Arc::new(a.clone()), Arc::new(with_uid("b"))];
        let mut memo = Memo::default();
        memo.refresh(&first);
        assert_eq!(memo.pods.len(), 2);
        assert!(memo.pods["a"].waiting);
        assert_eq!(memo.pods["a"].requests, (100, 10 * 1024 * 1024 * 1000));
        assert_eq!(memo.pods["a"].owner.as_deref(), Some("rs"));
        // Unchanged objects are not read again: what was kept for them stays.
        if let Some(f) = memo.pods.get_mut("a") {
            f.requests = (7, 7);
        }
        memo.refresh(&first);
        assert_eq!(memo.pods["a"].requests, (7, 7), "a's object did not change");
        // The same content in a new object (a cache update) is read again.
        memo.refresh(&[Arc::new(a.clone()), first[1].clone()]);
        assert_eq!(memo.pods["a"].requests, (100, 10 * 1024 * 1024 * 1000));
        a["spec"]["nodeName"] = json!("n1");
        a["status"] = json!({"phase": "Succeeded"});
        let second = vec![Arc::new(a)];
        memo.refresh(&second);
        assert_eq!(memo.pods.len(), 1, "b is gone");
        let f = &memo.pods["a"];
        assert_eq!(f.node, "n1");
        assert!(!f.waiting && f.finished);
    }

    #[test]
    fn node_facts_follow_the_cache() {
        let mut nodes = Nodes::default();
        let first = vec![node("a", "1", "1Gi"), node("b", "2", "2Gi")];
        let facts = nodes.of(&first);
        assert_eq!((facts[0].room.cpu, facts[1].room.cpu), (1000, 2000));
        assert_eq!((facts[0].name.as_str(), facts[1].name.as_str()), ("a", "b"));
        // Unchanged objects are not read again: what was kept for them stays.
        if let Some(f) = nodes.by_addr.get_mut(&addr(&first[0])) {
            f.room.cpu = 7;
        }
        assert_eq!(nodes.of(&first)[0].room.cpu, 7, "a's object did not change");
        let second = vec![node("b", "4", "2Gi")];
        assert_eq!(
            nodes.of(&second)[0].room.cpu,
            4000,
            "a changed node is read again"
        );
        assert_eq!(nodes.by_addr.len(), 1, "a is gone, and b's old object");
    }

    #[test]
    fn percentages_are_the_same_in_64_and_128_bits() {
        for (part, total) in [(0, 7), (5, 7), (999, 1000), (1 << 40, 3 << 40), (7, 1)] {
            assert_eq!(percent(part, total), part * 100 / total);
        }
        // Beyond 64 bits (no real node), still exact.
        let big = i128::from(i64::MAX) * 4;
        assert_eq!(percent(big / 2, big), 50);
        assert_eq!(percent(i128::from(i64::MIN), 1), i128::from(i64::MIN) * 100);
    }

    #[test]
    fn large_clusters_score_a_share_of_their_nodes() {
        assert_eq!(nodes_to_score(3), 3);
        assert_eq!(nodes_to_score(100), 100);
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(50_000), 2500);
    }

    #[test]
    fn replicas_of_one_owner_spread() {
        let room = Room {
            cpu: 4000,
            memory: 4 << 30,
            pods: 10,
            cpu_total: 4000,
            memory_total: 4 << 30,
        };
        let p = pod("100m", "100Mi");
        assert!(score(requests(&p), &room, 0) > score(requests(&p), &room, 1));
    }
}
