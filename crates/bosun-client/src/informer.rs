//! A watch-backed cache of one resource: list, then watch from the list's revision,
//! applying every event; list again when the watch ends or its revision was compacted.
//! Readers get cheap `Arc` snapshots of objects and a notification on every change.

use bosun_api::json::At;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Client, Query};

/// Shortest time between two passes of a loop woken by informer changes: under a flood of
/// changes (thousands of pods a second) its passes then take them in batches instead of
/// running back to back, each over every cached object.
pub const MIN_PASS_GAP: Duration = Duration::from_millis(20);

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the informer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the full list (at start, after an error or an expired watch).
    Listing,
    /// Applying watch events from the list's revision on.
    Watching,
}

/// What an informer can cache: an object decoded from the API's JSON that tells its key,
/// its resource version and its controlling owner. Whole objects (`Value`) are what
/// controllers cache; a process that reads a few fields of many objects (the hollow agent)
/// caches a struct of only those.
pub trait Cached: serde::de::DeserializeOwned + Send + Sync + 'static {
    /// `namespace/name`.
    fn cache_key(&self) -> String;
    /// metadata.resourceVersion as a number (0 when absent).
    fn resource_version(&self) -> i64;
    /// The uid of its controlling owner, for [`Informer::owned_by`].
    fn controller_uid(&self) -> Option<&str>;
}

impl Cached for Value {
    fn cache_key(&self) -> String {
        key(self)
    }
    fn resource_version(&self) -> i64 {
        rv(self)
    }
    fn controller_uid(&self) -> Option<&str> {
        controller_uid(self)
    }
}

/// For typed views' fields (`#[serde(deserialize_with = "null_as_default")]`): a field the
/// JSON holds as `null` reads as absent, so one odd object cannot stop a cache's decoding.
///
/// # Errors
/// When the value is neither null nor a `T`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The cache (cheap to clone; every clone sees the same objects).
pub struct Informer<T: Cached = Value> {
    objects: Arc<RwLock<Cache<T>>>,
    revision: Arc<AtomicI64>,
    /// Counts changes; every subscriber sees each new count ([`Changes`]).
    changes: Arc<watch::Sender<u64>>,
    synced: watch::Receiver<bool>,
}

impl<T: Cached> Clone for Informer<T> {
    fn clone(&self) -> Self {
        Informer {
            objects: self.objects.clone(),
            revision: self.revision.clone(),
            changes: self.changes.clone(),
            synced: self.synced.clone(),
        }
    }
}

/// The cached objects, and an index of them by their controlling owner's uid.
struct Cache<T> {
    objects: BTreeMap<String, Arc<T>>,
    /// Keyed by owner uids, which object authors write: std's seeded hasher, so that
    /// crafted uids cannot collide (FxHash has no seed).
    owned: HashMap<String, BTreeSet<String>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            owned: HashMap::new(),
        }
    }
}

/// The uid of an object's controlling owner (the ownerReference with controller: true).
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.at("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

impl<T: Cached> Cache<T> {
    /// Caches `obj` under `key`. Most updates keep the object's owner, and then leave the
    /// owner index as it is.
    fn insert(&mut self, key: String, obj: Arc<T>) {
        let old = self.objects.insert(key.clone(), obj.clone());
        let was = old.as_deref().and_then(Cached::controller_uid);
        let now = obj.controller_uid();
        if old.is_some() && was == now {
            return;
        }
        if let Some(was) = was {
            self.unindex(was, &key);
        }
        if let Some(now) = now {
            self.owned.entry(now.to_string()).or_default().insert(key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.objects.remove(key) {
            if let Some(owner) = old.controller_uid() {
                self.unindex(owner, key);
            }
        }
    }

    /// Drops `key` from `owner`'s entry of the index.
    fn unindex(&mut self, owner: &str, key: &str) {
        if let Some(keys) = self.owned.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.owned.remove(owner);
            }
        }
    }
}

fn key(obj: &Value) -> String {
    let ns = obj
        .at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = obj
        .at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{ns}/{name}")
}

fn rv(obj: &Value) -> i64 {
    obj.at("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl<T: Cached> Informer<T> {
    /// Starts caching `resource` (all namespaces) through `client`, until `cancel`.
    pub fn start(
        client: Client,
        resource: &str,
        cancel: CancellationToken,
    ) -> (Informer<T>, tokio::task::JoinHandle<()>) {
        let q = Query {
            resource: resource.to_string(),
            ..Default::default()
        };
        Informer::start_query(client, q, cancel)
    }

    /// Starts caching what `q` selects (its namespace, label and field selectors; the
    /// page size is the informer's), until `cancel`. An agent caches only the pods bound
    /// to it this way (`spec.nodeName=<node>`).
    pub fn start_query(
        client: Client,
        q: Query,
        cancel: CancellationToken,
    ) -> (Informer<T>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let inf = Informer {
            objects: Arc::new(RwLock::new(Cache::default())),
            revision: Arc::new(AtomicI64::new(0)),
            changes: Arc::new(watch::channel(0).0),
            synced: rx,
        };
        let task = tokio::spawn(inf.clone().run(client, q, tx, cancel));
        (inf, task)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.objects
            .read()
            .map(|m| m.objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached objects whose controlling owner has `uid` (an index: no scan).
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<T>> {
        let Ok(g) = self.objects.read() else {
            return Vec::new();
        };
        g.owned
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| g.objects.get(k).cloned())
            .collect()
    }

    /// One object by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        self.objects
            .read()
            .ok()?
            .objects
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// The store revision the cache reflects (every change up to it is in).
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// A subscription to this cache's changes, from now on: for [`Changes`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells subscribers that the cache changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until the first list is in.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    async fn run(
        self,
        client: Client,
        q: Query,
        synced: watch::Sender<bool>,
        cancel: CancellationToken,
    ) {
        let q = Query { limit: 500, ..q };
        let resource = q.resource.clone();
        let mut state = State::Listing;
        let mut backoff = FIRST_BACKOFF;
        let mut from = String::new();
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match state {
                State::Listing => {
                    let listed = tokio::select! {
                        _ = cancel.cancelled() => return,
                        l = client.list_all_as::<T>(&q) => l,
                    };
                    match listed {
                        Ok(l) => {
                            let mut cache = Cache::default();
                            for o in l.items {
                                cache.insert(o.cache_key(), Arc::new(o));
                            }
                            if let Ok(mut g) = self.objects.write() {
                                *g = cache;
                            }
                            let r: i64 = l.resource_version.parse().unwrap_or(0);
                            self.revision.store(r, Ordering::Release);
                            from = l.resource_version;
                            let _ = synced.send(true);
                            self.changed();
                            state = State::Watching;
                            backoff = FIRST_BACKOFF;
                        }
                        Err(e) => {
                            tracing::debug!(resource, error = %e, backoff_ms = backoff.as_millis() as u64, "list failed; retrying");
                            if !pause(&cancel, &mut backoff).await {
                                return;
                            }
                        }
                    }
                }
                State::Watching => {
                    let started = tokio::select! {
                        _ = cancel.cancelled() => return,
                        w = client.watch_as::<T>(&q, &from, true) => w,
                    };
                    let mut stream = match started {
                        Ok(s) => Box::pin(s),
                        Err(e) => {
                            tracing::debug!(resource, error = %e, "watch failed; listing again");
                            state = State::Listing;
                            if !pause(&cancel, &mut backoff).await {
                                return;
                            }
                            continue;
                        }
                    };
                    loop {
                        let ev = tokio::select! {
                            _ = cancel.cancelled() => return,
                            ev = stream.next() => ev,
                        };
                        let ev = match ev {
                            Some(Ok(ev)) => ev,
                            // The server went away: resume from where we are, elsewhere.
                            Some(Err(_)) | None => break,
                        };
                        let r = ev.object.resource_version();
                        match ev.kind.as_str() {
                            "ADDED" | "MODIFIED" => {
                                if let Ok(mut g) = self.objects.write() {
                                    let k = ev.object.cache_key();
                                    g.insert(k, Arc::new(ev.object));
                                }
                            }
                            "DELETED" => {
                                if let Ok(mut g) = self.objects.write() {
                                    g.remove(&ev.object.cache_key());
                                }
                            }
                            "BOOKMARK" => {}
                            _ => {
                                // ERROR: expired; list again.
                                state = State::Listing;
                                break;
                            }
                        }
                        // Only a revision whose events have all arrived counts: a watch
                        // resumed from it loses nothing, and a controller waiting for
                        // its own write of several objects sees all of them.
                        if r > 0 && !ev.more {
                            self.revision.store(r, Ordering::Release);
                            from = r.to_string();
                        }
                        self.changed();
                    }
                    if state == State::Watching && !pause(&cancel, &mut backoff).await {
                        return;
                    }
                }
            }
        }
    }
}

/// What wakes a loop that reads informers: a change to any of them. None is lost: a
/// change made while the loop was busy (its pass over the caches, its writes) makes the
/// next [`Changes::next`] return at once. (A wait armed only when the loop is done would
/// miss it, and the loop would sleep until its periodic resync.)
pub struct Changes {
    subs: Vec<watch::Receiver<u64>>,
}

impl Changes {
    /// Changes from now on to the informers these subscriptions are of
    /// ([`Informer::subscribe`]).
    pub fn new(subs: Vec<watch::Receiver<u64>>) -> Self {
        Changes { subs }
    }

    /// Waits until any of the informers changed since this was made or last returned.
    /// (Never returns when every informer has stopped: the loop's own cancellation and
    /// resync still wake it.)
    pub async fn next(&mut self) {
        while !self.subs.is_empty() {
            let waits = self.subs.iter_mut().map(|s| Box::pin(s.changed()));
            let (r, i, _) = futures::future::select_all(waits).await;
            if r.is_ok() {
                for s in &mut self.subs {
                    s.borrow_and_update();
                }
                return;
            }
            // That informer is gone (its task and every handle dropped).
            self.subs.swap_remove(i);
        }
        std::future::pending().await
    }

    /// [`Changes::next`], or `resync` from now, whichever comes first: what a loop waits
    /// for between passes.
    pub async fn next_or(&mut self, resync: Duration) {
        let _ = tokio::time::timeout(resync, self.next()).await;
    }
}

/// What a loop read of cached objects, kept per object while the cache holds it: the
/// cache replaces an object it updates, so an object held (the memo keeps it alive, and
/// so its address) has the same content, and a pass over thousands of objects reads only
/// the new and changed ones.
pub struct Memo<T> {
    by_addr: FxHashMap<usize, (Arc<Value>, T)>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            by_addr: FxHashMap::default(),
        }
    }
}

impl<T> Memo<T> {
    /// What `read` makes of `obj`, read now if this object was not read before.
    pub fn facts(&mut self, obj: &Arc<Value>, read: impl FnOnce(&Value) -> T) -> &T {
        let entry = self
            .by_addr
            .entry(Arc::as_ptr(obj) as usize)
            .or_insert_with(|| (obj.clone(), read(obj)));
        &entry.1
    }

    /// What was read of `obj`, if it was.
    pub fn get(&self, obj: &Arc<Value>) -> Option<&T> {
        self.by_addr
            .get(&(Arc::as_ptr(obj) as usize))
            .map(|(_, t)| t)
    }

    /// Forgets what was read of objects only the memo still holds: those the cache
    /// replaced (changed) or dropped (deleted). "Only the memo" is a strong count of one:
    /// anything else that holds an object, such as a second memo, keeps it here too.
    pub fn end_pass(&mut self) {
        self.by_addr.retain(|_, (o, _)| Arc::strong_count(o) > 1);
    }

    /// How many objects the memo holds.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Sleeps a jittered, doubling back-off; false when cancelled.
async fn pause(cancel: &CancellationToken, backoff: &mut Duration) -> bool {
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    let d = backoff.mul_f64(jitter);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One informer per resource, shared by every controller that asks for it (as
/// client-go's shared informer factory): one watch per resource, whatever the number of
/// controllers.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    cancel: CancellationToken,
    started: Arc<std::sync::Mutex<Vec<Started>>>,
}

/// A started informer: its resource, the cache, and its task.
type Started = (String, Informer<Value>, tokio::task::JoinHandle<()>);

impl Informers {
    /// Informers through `client`, all stopped by `cancel`.
    pub fn new(client: Client, cancel: CancellationToken) -> Self {
        Informers {
            client,
            cancel,
            started: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// The informer of `resource`, started on first use.
    pub fn get(&self, resource: &str) -> Informer {
        let Ok(mut started) = self.started.lock() else {
            // A panicked holder: a private informer still works.
            return Informer::start(self.client.clone(), resource, self.cancel.clone()).0;
        };
        if let Some((_, inf, _)) = started.iter().find(|(r, _, _)| r == resource) {
            return inf.clone();
        }
        let (inf, task) = Informer::start(self.client.clone(), resource, self.cancel.clone());
        started.push((resource.to_string(), inf.clone(), task));
        inf
    }

    /// Waits for every informer task to end (after `cancel`).
    pub async fn join(self) {
        let tasks: Vec<tokio::task::JoinHandle<()>> = match self.started.lock() {
            Ok(mut s) => s.drain(..).map(|(_, _, t)| t).collect(),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_owner_index_follows_inserts_owner_changes_and_removals() {
        let pod = |owner: Option<&str>, v: i64| {
            let refs = owner.map_or(json!([]), |o| json!([{"uid": o, "controller": true}]));
            Arc::new(json!({"metadata": {"name": "p", "ownerReferences": refs}, "v": v}))
        };
        let owned = |c: &Cache<Value>, o: &str| -> Vec<String> {
            c.owned.get(o).into_iter().flatten().cloned().collect()
        };
        let mut c = Cache::default();
        c.insert("ns/p".into(), pod(Some("a"), 1));
        assert_eq!(owned(&c, "a"), ["ns/p"]);
        // An update with the same owner: indexed once, and the new object is cached.
        c.insert("ns/p".into(), pod(Some("a"), 2));
        assert_eq!(owned(&c, "a"), ["ns/p"]);
        assert_eq!(c.objects["ns/p"]["v"], 2);
        // Adopted by another owner, then orphaned, then owned again.
        c.insert("ns/p".into(), pod(Some("b"), 3));
        assert!(!c.owned.contains_key("a"));
        assert_eq!(owned(&c, "b"), ["ns/p"]);
        c.insert("ns/p".into(), pod(None, 4));
        assert!(c.owned.is_empty());
        c.insert("ns/p".into(), pod(Some("a"), 5));
        assert_eq!(owned(&c, "a"), ["ns/p"]);
        c.remove("ns/p");
        assert!(c.owned.is_empty() && c.objects.is_empty());
    }

    #[test]
    fn a_change_while_the_loop_is_busy_wakes_its_next_wait_at_once_and_only_once() {
        use futures::FutureExt;
        let (a, b) = (watch::channel(0u64).0, watch::channel(0u64).0);
        let mut changes = Changes::new(vec![a.subscribe(), b.subscribe()]);
        // Nothing changed yet: the wait does not return.
        assert!(changes.next().now_or_never().is_none());
        // Changes while the loop is not waiting (its pass): the next wait returns at
        // once, once for both.
        a.send_modify(|n| *n += 1);
        b.send_modify(|n| *n += 1);
        assert!(changes.next().now_or_never().is_some());
        assert!(changes.next().now_or_never().is_none());
        b.send_modify(|n| *n += 1);
        assert!(changes.next().now_or_never().is_some());
        // One informer gone: the other still wakes the loop; all gone: never.
        drop(a);
        assert!(changes.next().now_or_never().is_none());
        b.send_modify(|n| *n += 1);
        assert!(changes.next().now_or_never().is_some());
        drop(b);
        assert!(changes.next().now_or_never().is_none());
    }

    #[test]
    fn the_memo_reads_an_object_once_and_forgets_it_when_the_cache_does() {
        let mut memo: Memo<String> = Memo::default();
        let mut reads = 0;
        let old = Arc::new(json!({"v": "old"}));
        for _ in 0..3 {
            let got = memo.facts(&old, |o| {
                reads += 1;
                o["v"].to_string()
            });
            assert_eq!(got, "\"old\"");
        }
        assert_eq!(reads, 1);
        assert_eq!(memo.get(&old).map(String::as_str), Some("\"old\""));
        assert!(memo.get(&Arc::new(json!({"v": "old"}))).is_none());
        // The cache replaces it: the old object lives on only in the memo, which drops it.
        let new = Arc::new(json!({"v": "new"}));
        drop(old);
        assert_eq!(memo.facts(&new, |o| o["v"].to_string()), "\"new\"");
        memo.end_pass();
        assert_eq!(memo.len(), 1);
        // Deleted from the cache: forgotten.
        drop(new);
        memo.end_pass();
        assert!(memo.is_empty());
    }
}
