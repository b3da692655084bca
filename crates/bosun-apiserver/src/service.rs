//! The `bosun.api.v1.Resources` gRPC service: create, get, list, update, patch, delete,
//! apply, watch, review and discovery of Kubernetes objects.
//!
//! Every request is authenticated from its client certificate and authorized (superuser,
//! node authorizer, RBAC) before anything is read or written; mutating requests are
//! audited. Reads are linearizable (a read barrier, then the local state machine); writes
//! are compare-and-swap transactions that the store forwards to the leader.

use bosun_api::json::At;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::kinds::{self, KindInfo};
use bosun_api::resources::resources_server::{Resources, ResourcesServer};
use bosun_api::resources::*;
use bosun_api::selector::{FieldSelector, LabelSelector};
use bosun_store::command::{Compare, Op};
use bosun_store::Node;
use futures::Stream;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::admission::{self, name_of, namespace_of, resource_version_of, uid_of, LAST_APPLIED};
use crate::allocator::{self, ServiceCidr};
use crate::audit::{Audit, Entry};
use crate::authz::{caller, Authorizer};
use crate::error::{Error, Result};
use crate::rbac::{Attributes, UserInfo};
use crate::store::{self, SecretKeys, Store, Stored};

/// Optimistic retries of an update that did not name a resource version (the object
/// changed between our read and our write: read again and redo).
const UPDATE_RETRIES: usize = 8;

/// How the API server is set up.
#[derive(Debug)]
pub struct Config {
    /// The audit log (see [`Audit::open`]).
    pub audit: Audit,
    /// Service IPs are allocated from here.
    pub service_cidr: ServiceCidr,
    /// Keys that encrypt Secrets at rest (empty: plain).
    pub secrets: SecretKeys,
    /// Largest object accepted, in bytes (the store's value limit).
    pub max_object_bytes: usize,
    /// Dials agents for `bosun logs` and `bosun exec` (with this server's certificate);
    /// `None`: those calls are refused as unavailable.
    pub agents: Option<bosun_pki::Dialer>,
}

/// The shared state of the service.
pub struct Inner {
    store: Store,
    authz: Arc<Authorizer>,
    audit: Audit,
    cidr: ServiceCidr,
    max_object_bytes: usize,
    agents: Option<bosun_pki::Dialer>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// What this server's watches send and decode, made once for all of them.
    watch_memo: crate::watch::memo::Memo,
}

/// The gRPC service (cheap to clone).
#[derive(Clone)]
pub struct ResourceService {
    inner: Arc<Inner>,
}

/// Starts the API server on `node`: returns its gRPC routes and its background tasks
/// (RBAC cache invalidation, bootstrap of default objects), which end at `shutdown`.
pub fn start(
    node: Arc<Node>,
    config: Config,
    shutdown: CancellationToken,
) -> (tonic::service::Routes, Vec<tokio::task::JoinHandle<()>>) {
    let store = Store::new(node, config.secrets.clone());
    let authz = Arc::new(Authorizer::new(store.clone()));
    let inner = Arc::new(Inner {
        store,
        authz: authz.clone(),
        audit: config.audit,
        cidr: config.service_cidr,
        max_object_bytes: config.max_object_bytes,
        agents: config.agents,
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        watch_memo: crate::watch::memo::Memo::default(),
    });
    let mut handles = vec![tokio::spawn(authz.track_changes(shutdown.clone()))];
    handles.push(tokio::spawn(crate::bootstrap::run(
        inner.clone(),
        shutdown.clone(),
    )));
    let closer = inner.clone();
    handles.push(tokio::spawn(async move {
        closer.shutdown.cancelled().await;
        closer.tasks.close();
        closer.tasks.wait().await;
    }));
    let limit = config.max_object_bytes + (512 << 10);
    let pods = bosun_api::resources::pods_server::PodsServer::new(ResourceService {
        inner: inner.clone(),
    });
    let svc = ResourcesServer::new(ResourceService { inner })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(64 << 20);
    (tonic::service::Routes::new(svc).add_service(pods), handles)
}

/// The kind addressed by a plural resource name.
fn kind_of(resource: &str) -> Result<&'static KindInfo> {
    kinds::by_resource(resource)
        .or_else(|| kinds::resolve(resource))
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "the server doesn't have a resource type {resource:?}"
            ))
        })
}

fn parse_object(bytes: &[u8], limit: usize) -> Result<Value> {
    if bytes.len() > limit {
        return Err(Error::BadRequest(format!(
            "the object is too large: {} bytes, the limit is {limit}",
            bytes.len()
        )));
    }
    let v: Value = bosun_api::json::from_bytes(bytes)
        .map_err(|e| Error::BadRequest(format!("the object is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::BadRequest("the object must be a JSON object".into()));
    }
    Ok(v)
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn attrs(kind: &KindInfo, verb: &str, sub: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.to_string(),
        api_group: kind.group.to_string(),
        resource: kind.resource.to_string(),
        subresource: sub.to_string(),
        // A Namespace is addressed as its own namespace, as Kubernetes does, so a
        // RoleBinding in it can grant reading it.
        namespace: if kind.namespaced {
            namespace.to_string()
        } else if kind.resource == "namespaces" {
            name.to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// The metadata key carrying a fence term (the leader's scheduler and controllers set it).
pub const FENCE_HEADER: &str = "bosun-fence-term";

fn fence_of<T>(req: &Request<T>) -> Result<Option<u64>> {
    match req.metadata().get(FENCE_HEADER) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::BadRequest(format!("{FENCE_HEADER} must be a Raft term"))),
    }
}

fn rv_of(obj: &Value) -> Result<Option<i64>> {
    let rv = resource_version_of(obj);
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<i64>().map(Some).map_err(|_| {
        Error::BadRequest(format!(
            "metadata.resourceVersion {rv:?} is not a resource version"
        ))
    })
}

/// Kinds whose objects own others (through ownerReferences) until the controllers' garbage
/// collector exists, and the kinds such dependents are.
const OWNERS: [&str; 4] = ["deployments", "replicasets", "daemonsets", "jobs"];
const DEPENDENTS: [&str; 2] = ["replicasets", "pods"];

/// What happens to the dependents of a deleted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Propagation {
    /// Delete the object, then its dependents.
    Background,
    /// Delete the dependents, then the object.
    Foreground,
    /// Keep the dependents, without the owner reference.
    Orphan,
}

/// How a read-modify-write goes.
#[derive(Debug, Clone, Copy)]
struct Cas {
    /// The resource version the caller read: a mismatch is a conflict, not a retry.
    pinned: Option<i64>,
    /// Decide, but write nothing.
    dry_run: bool,
    /// Run admission (and allocation) on the result.
    admit: bool,
}

impl Cas {
    fn admitted(pinned: Option<i64>, dry_run: bool) -> Self {
        Cas {
            pinned,
            dry_run,
            admit: true,
        }
    }
}

/// What an update computes from the stored object.
enum Next {
    /// Write this object.
    Write(Value),
    /// Delete the object (its last finalizer was removed while it was being deleted).
    Delete,
}

impl Inner {
    fn node_of_pod(&self, kind: &KindInfo, ns: &str, name: &str) -> Option<String> {
        if kind.resource != "pods" || name.is_empty() {
            return None;
        }
        let stored = self.store.get(&kind.key(ns, name)).ok()??;
        stored
            .object
            .at("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn authorize(
        &self,
        user: &UserInfo,
        kind: &KindInfo,
        verb: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Result<()> {
        let pod_node = if crate::rbac::node_name(user).is_some() {
            let bound = self.node_of_pod(kind, ns, name);
            // A node writing a pod that is gone (deleted while its agent worked on it) is
            // told so, not that the pod is someone else's. Nodes may read every pod, so
            // this tells them nothing new.
            if bound.is_none()
                && kind.resource == "pods"
                && verb != "create"
                && !name.is_empty()
                && matches!(self.store.get(&kind.key(ns, name)), Ok(None))
            {
                return Err(Error::NotFound {
                    resource: "pods".into(),
                    name: name.into(),
                });
            }
            bound
        } else {
            None
        };
        self.authz
            .check(user, &attrs(kind, verb, sub, ns, name), pod_node.as_deref())
    }

    fn namespace_key(kind: &KindInfo, ns: &str) -> Option<String> {
        if kind.namespaced {
            kinds::by_resource("namespaces").map(|k| k.key("", ns))
        } else {
            None
        }
    }

    /// Encodes `obj` as it will be stored at `key`, refusing it when the encoding is over
    /// the object size limit. The request's bytes are checked on arrival too, but what is
    /// stored can be larger: apply adds the last-applied annotation, a merge patch adds to
    /// the stored object, and Secrets grow when encrypted.
    ///
    /// # Errors
    /// [`Error::TooLarge`] over the limit; [`Error::Corrupt`] when it cannot be encoded.
    fn encode_within_limit(&self, kind: &KindInfo, key: &str, obj: &Value) -> Result<Vec<u8>> {
        let bytes = self.store.encode(key, obj)?;
        self.within_limit(kind, name_of(obj), &bytes)?;
        Ok(bytes)
    }

    /// Fails when the object `name` stored as `bytes` would be larger than allowed.
    fn within_limit(&self, kind: &KindInfo, name: &str, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.max_object_bytes {
            return Err(Error::TooLarge {
                resource: kind.resource.into(),
                name: name.into(),
                size: bytes.len(),
                limit: self.max_object_bytes,
            });
        }
        Ok(())
    }

    /// Creates `obj` (already typed-checked by the caller or not): the full create path.
    pub(crate) async fn create(
        &self,
        kind: &KindInfo,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value> {
        admission::prepare_create(kind, &mut obj)?;
        if kind.kind == "Job" {
            job_selector(&mut obj);
        }
        let more = if kind.resource == "services" {
            allocator::check(&obj, None, &self.cidr)
        } else {
            Vec::new()
        };
        let obj = admission::admit(kind, obj, None, more)?;
        let ns = namespace_of(&obj).to_string();
        let name = name_of(&obj).to_string();
        let key = kind.key(&ns, &name);
        let ns_key = Self::namespace_key(kind, &ns);
        for _ in 0..UPDATE_RETRIES {
            let mut candidate = obj.clone();
            let picked = if kind.resource == "services" {
                let store = &self.store;
                allocator::fill(&mut candidate, None, &self.cidr, &|k| {
                    store.exists(k).unwrap_or(false)
                })?
            } else {
                allocator::Picked::default()
            };
            let encoded = self.encode_within_limit(kind, &key, &candidate)?;
            if dry_run {
                return Ok(candidate);
            }
            let allocs: BTreeSet<String> = if kind.resource == "services" {
                allocator::held(&candidate)
            } else {
                BTreeSet::new()
            };
            let mut compare = vec![store::absent(&key)];
            let mut failure = vec![store::read(&key)];
            if let Some(k) = &ns_key {
                // The namespace as it is now: it must exist and not be terminating, and
                // still be so when the write commits.
                match self.store.get(k)? {
                    Some(n) if n.object.at("/metadata/deletionTimestamp").is_some() => {
                        return Err(Error::Forbidden(format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        )))
                    }
                    Some(n) => compare.push(store::unchanged_since(k, n.mod_revision)),
                    None => compare.push(store::present(k)),
                }
                failure.push(store::read(k));
            }
            let owner = format!("{ns}/{name}");
            let mut success = vec![store::put_raw(&key, encoded)];
            for a in &allocs {
                compare.push(store::absent(a));
                failure.push(store::read(a));
                success.push(store::put_raw(a, owner.as_bytes().to_vec()));
            }
            let (rev, res) = self.store.txn(compare, success, failure).await?;
            if res.succeeded {
                store::set_resource_version(&mut candidate, rev);
                return Ok(candidate);
            }
            let found = store::reads(&res);
            if found.first().is_some_and(Option::is_some) {
                return Err(Error::AlreadyExists {
                    resource: kind.resource.into(),
                    name,
                });
            }
            if ns_key.is_some() && found.get(1).is_some_and(Option::is_none) {
                return Err(Error::NotFound {
                    resource: "namespaces".into(),
                    name: ns,
                });
            }
            // An allocation clashed: a value the user chose is their error; a value we
            // picked is retried with another, once this server has applied the write
            // that took it (picks skip what the local state says is taken).
            let skip = if ns_key.is_some() { 2 } else { 1 };
            for (a, hit) in allocs.iter().zip(found.iter().skip(skip)) {
                if hit.is_some() && !picked.automatic.contains(a) {
                    return Err(Error::BadRequest(format!(
                        "{}: provided value is already allocated",
                        a.trim_start_matches("/registry/allocations/")
                    )));
                }
            }
            self.store.barrier().await?;
        }
        Err(Error::Exhausted(
            "could not allocate service values after several attempts".into(),
        ))
    }

    /// Reads, transforms and writes one object with compare-and-swap, retrying (bounded)
    /// when it changed in between and the caller did not pin a resource version. Returns
    /// the object and whether anything was written (or deleted).
    async fn guaranteed_update(
        &self,
        kind: &KindInfo,
        ns: &str,
        name: &str,
        how: Cas,
        mutate: &(dyn Fn(&Value) -> Result<Next> + Send + Sync),
    ) -> Result<(Value, bool)> {
        let Cas {
            pinned,
            dry_run,
            admit,
        } = how;
        let key = kind.key(ns, name);
        self.store.barrier().await?;
        for _ in 0..UPDATE_RETRIES {
            let Some(Stored {
                object: old,
                mod_revision,
                stale_encryption,
            }) = self.store.get(&key)?
            else {
                return Err(Error::NotFound {
                    resource: kind.resource.into(),
                    name: name.into(),
                });
            };
            if let Some(rv) = pinned {
                if rv != mod_revision {
                    return Err(conflict(kind, name));
                }
            }
            let mut new = match mutate(&old)? {
                Next::Delete => {
                    if dry_run {
                        return Ok((old, true));
                    }
                    match self.delete_now(kind, &key, &old, mod_revision).await? {
                        Some(v) => return Ok((v, true)),
                        None if pinned.is_some() => return Err(conflict(kind, name)),
                        None => continue,
                    }
                }
                Next::Write(v) => v,
            };
            let old_allocs = allocator::held(&old);
            let mut picked = allocator::Picked::default();
            if admit {
                let mut more = Vec::new();
                if kind.resource == "services" {
                    let store = &self.store;
                    picked = allocator::fill(&mut new, Some(&old), &self.cidr, &|k| {
                        store.exists(k).unwrap_or(false)
                    })?;
                    more = allocator::check(&new, Some(&old), &self.cidr);
                }
                new = admit_update(kind, &old, new, more)?;
            }
            store::set_resource_version(&mut new, mod_revision);
            if same_object(&new, &old) && !stale_encryption {
                return Ok((new, false));
            }
            let encoded = self.encode_within_limit(kind, &key, &new)?;
            if dry_run {
                return Ok((new, true));
            }
            let new_allocs = if kind.resource == "services" {
                allocator::held(&new)
            } else {
                BTreeSet::new()
            };
            let mut compare: Vec<Compare> = vec![store::unchanged_since(&key, mod_revision)];
            let mut success: Vec<Op> = vec![store::put_raw(&key, encoded)];
            let owner = format!("{ns}/{name}");
            for a in new_allocs.difference(&old_allocs) {
                compare.push(store::absent(a));
                success.push(store::put_raw(a, owner.as_bytes().to_vec()));
            }
            for a in old_allocs.difference(&new_allocs) {
                success.push(store::delete(a));
            }
            let (rev, res) = self
                .store
                .txn(compare, success, vec![store::read(&key)])
                .await?;
            if res.succeeded {
                store::set_resource_version(&mut new, rev);
                return Ok((new, true));
            }
            let still_there = store::reads(&res).first().is_some_and(Option::is_some);
            if !still_there {
                return Err(Error::NotFound {
                    resource: kind.resource.into(),
                    name: name.into(),
                });
            }
            let changed = store::reads(&res)
                .first()
                .and_then(|k| k.as_ref().map(|k| k.mod_revision != mod_revision))
                .unwrap_or(true);
            if changed && pinned.is_some() {
                return Err(conflict(kind, name));
            }
            if !changed && picked.automatic.is_empty() {
                return Err(Error::BadRequest(
                    "a requested node port or service IP is already allocated".into(),
                ));
            }
            self.store.barrier().await?;
        }
        Err(conflict(kind, name))
    }

    /// Deletes the stored object at `rev` (and releases what it holds). `None` when it
    /// changed in between.
    async fn delete_now(
        &self,
        kind: &KindInfo,
        key: &str,
        old: &Value,
        rev: i64,
    ) -> Result<Option<Value>> {
        let mut success = vec![store::delete(key)];
        if kind.resource == "services" {
            for a in allocator::held(old) {
                success.push(store::delete(&a));
            }
        }
        let (_, res) = self
            .store
            .txn(vec![store::unchanged_since(key, rev)], success, vec![])
            .await?;
        Ok(res.succeeded.then(|| old.clone()))
    }

    async fn update(
        &self,
        kind: &KindInfo,
        ns: &str,
        sub: &str,
        obj: Value,
        dry_run: bool,
    ) -> Result<Value> {
        let name = name_of(&obj).to_string();
        let pinned = rv_of(&obj)?;
        let status_only = sub == "status";
        if !sub.is_empty() && !status_only {
            return Err(Error::Unsupported(format!("subresource {sub:?}")));
        }
        if status_only && !kind.has_status {
            return Err(Error::BadRequest(format!(
                "{} have no status subresource",
                kind.resource
            )));
        }
        let mutate = move |old: &Value| -> Result<Next> {
            let new = admission::prepare_update(kind, old, obj.clone(), status_only)?;
            Ok(finalize_or_write(old, new))
        };
        self.guaranteed_update(kind, ns, &name, Cas::admitted(pinned, dry_run), &mutate)
            .await
            .map(|(v, _)| v)
    }

    async fn patch(
        &self,
        kind: &KindInfo,
        target: &Target,
        patch: Value,
        dry_run: bool,
    ) -> Result<Value> {
        let pinned = rv_of(&patch)?;
        let mutate = patch_mutation(kind, &patch, target.subresource == "status");
        self.guaranteed_update(
            kind,
            &target.namespace,
            &target.name,
            Cas::admitted(pinned, dry_run),
            &mutate,
        )
        .await
        .map(|(v, _)| v)
    }

    async fn apply(
        &self,
        user: &UserInfo,
        kind: &KindInfo,
        desired: Value,
        dry_run: bool,
    ) -> Result<(Value, &'static str)> {
        let ns = namespace_of(&desired).to_string();
        let name = name_of(&desired).to_string();
        if name.is_empty() {
            return Err(Error::BadRequest(
                "apply needs metadata.name (generateName cannot be applied)".into(),
            ));
        }
        let mut manifest = desired.clone();
        if let Ok(meta) = admission::meta_mut(&mut manifest) {
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(LAST_APPLIED);
            }
            meta.remove("resourceVersion");
        }
        let manifest_text = serde_json::to_string(&manifest).unwrap_or_default();
        let annotate = |obj: &mut Value| {
            if let Ok(meta) = admission::meta_mut(obj) {
                let ann = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(a) = ann.as_object_mut() {
                    a.insert(LAST_APPLIED.into(), Value::String(manifest_text.clone()));
                }
            }
        };
        self.store.barrier().await?;
        let key = kind.key(&ns, &name);
        if self.store.get(&key)?.is_none() {
            self.authorize(user, kind, "create", "", &ns, &name)?;
            let mut obj = manifest.clone();
            annotate(&mut obj);
            match self.create(kind, obj, dry_run).await {
                Ok(v) => return Ok((v, "created")),
                // Created by someone else meanwhile: fall through to the update path.
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.authorize(user, kind, "patch", "", &ns, &name)?;
        let mutate = |old: &Value| -> Result<Next> {
            let last: Value = old
                .at("/metadata/annotations")
                .and_then(|a| a.get(LAST_APPLIED))
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            let patch = admission::apply_patch(&last, &manifest, old);
            let mut new = old.clone();
            admission::merge_patch(&mut new, &patch);
            annotate(&mut new);
            let new = admission::prepare_update(kind, old, new, false)?;
            Ok(Next::Write(new))
        };
        let (obj, wrote) = self
            .guaranteed_update(kind, &ns, &name, Cas::admitted(None, dry_run), &mutate)
            .await?;
        Ok((obj, if wrote { "configured" } else { "unchanged" }))
    }

    /// Binds a pod to a node (`pods/binding`, what the scheduler does): sets
    /// `spec.nodeName` on an unbound pod, with compare-and-swap; a pod bound elsewhere is a
    /// conflict. `binding` is a Kubernetes Binding: `{"metadata": {"name": POD},
    /// "target": {"kind": "Node", "name": NODE}}`.
    async fn bind(&self, kind: &KindInfo, ns: &str, binding: &Value) -> Result<Value> {
        let pod = name_of(binding).to_string();
        let mutate = bind_mutation(binding_target(binding));
        // Binding sets a field that pod updates may not touch: no update admission.
        let how = Cas {
            pinned: None,
            dry_run: false,
            admit: false,
        };
        self.guaranteed_update(kind, ns, &pod, how, &mutate)
            .await
            .map(|(v, _)| v)
    }

    /// Deletes with a propagation policy: dependents (objects whose ownerReferences name
    /// this one) are deleted after it (Background, the default), before it (Foreground),
    /// or kept with the reference removed (Orphan).
    async fn delete(&self, kind: &KindInfo, req: &DeleteRequest) -> Result<Value> {
        let target = req.target.clone().unwrap_or_default();
        let policy = match req.propagation_policy.as_str() {
            "" | "Background" => Propagation::Background,
            "Foreground" => Propagation::Foreground,
            "Orphan" => Propagation::Orphan,
            other => {
                return Err(Error::BadRequest(format!(
                    "propagationPolicy {other:?}: use Background, Foreground or Orphan"
                )))
            }
        };
        if kind.resource == "namespaces" {
            return self.delete_namespace(&target.name, req.dry_run).await;
        }
        let ns = if kind.namespaced {
            target.namespace.as_str()
        } else {
            ""
        };
        let uid = if req.dry_run || !OWNERS.contains(&kind.resource) {
            None
        } else {
            self.store.barrier().await?;
            self.store
                .get(&kind.key(ns, &target.name))?
                .map(|s| uid_of(&s.object).to_string())
        };
        match (&uid, policy) {
            (Some(uid), Propagation::Foreground) => self.delete_dependents(ns, uid).await?,
            (Some(uid), Propagation::Orphan) => self.orphan_dependents(ns, uid).await?,
            _ => {}
        }
        let deleted = self.delete_one(kind, req).await?;
        if let (Some(uid), Propagation::Background) = (&uid, policy) {
            self.delete_dependents(ns, uid).await?;
        }
        Ok(deleted)
    }

    /// Objects in `ns` whose ownerReferences name `uid`.
    fn dependents(&self, ns: &str, uid: &str) -> Result<Vec<(&'static KindInfo, String)>> {
        let mut out = Vec::new();
        for r in DEPENDENTS {
            let Some(k) = kinds::by_resource(r) else {
                continue;
            };
            let (kvs, _, _) = self.store.scan(&k.prefix(ns), None, 0, 0)?;
            for kv in &kvs {
                let obj = self.store.decode(kv)?.object;
                let owned = obj
                    .at("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    out.push((k, name_of(&obj).to_string()));
                }
            }
        }
        Ok(out)
    }

    async fn delete_dependents(&self, ns: &str, uid: &str) -> Result<()> {
        for (k, name) in self.dependents(ns, uid)? {
            let req = DeleteRequest {
                target: Some(Target {
                    resource: k.resource.into(),
                    namespace: ns.into(),
                    name: name.clone(),
                    subresource: String::new(),
                }),
                ..Default::default()
            };
            // A dependent's own dependents go too (Deployment, ReplicaSets, Pods).
            match Box::pin(self.delete(k, &req)).await {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn orphan_dependents(&self, ns: &str, uid: &str) -> Result<()> {
        for (k, name) in self.dependents(ns, uid)? {
            let uid = uid.to_string();
            let mutate = move |old: &Value| -> Result<Next> {
                let mut new = old.clone();
                let meta = admission::meta_mut(&mut new)?;
                if let Some(refs) = meta
                    .get_mut("ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                    if refs.is_empty() {
                        meta.remove("ownerReferences");
                    }
                }
                Ok(Next::Write(new))
            };
            match self
                .guaranteed_update(k, ns, &name, Cas::admitted(None, false), &mutate)
                .await
            {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes (or marks for deletion) one object, without looking at dependents.
    async fn delete_one(&self, kind: &KindInfo, req: &DeleteRequest) -> Result<Value> {
        let target = req.target.clone().unwrap_or_default();
        let pinned_uid = req.precondition_uid.clone();
        let pinned_rv = if req.precondition_resource_version.is_empty() {
            None
        } else {
            Some(
                req.precondition_resource_version
                    .parse::<i64>()
                    .map_err(|_| {
                        Error::BadRequest(
                            "preconditions.resourceVersion is not a resource version".into(),
                        )
                    })?,
            )
        };
        let grace = req.grace_period_seconds;
        let is_pod = kind.resource == "pods";
        let mutate = move |old: &Value| -> Result<Next> {
            if !pinned_uid.is_empty() && uid_of(old) != pinned_uid {
                return Err(Error::Conflict {
                    resource: kind.resource.into(),
                    name: name_of(old).into(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {pinned_uid}, UID in object meta: {}",
                        uid_of(old)
                    ),
                });
            }
            let has_finalizers = old
                .at("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let bound = old
                .at("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let grace = if is_pod {
                grace.unwrap_or_else(|| {
                    old.at("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                })
            } else {
                0
            };
            // A pod on a node is stopped by its agent first; the agent then deletes it
            // with grace period 0. Unbound pods go at once, as in Kubernetes.
            let graceful = is_pod && bound && grace > 0;
            if !has_finalizers && !graceful {
                return Ok(Next::Delete);
            }
            let mut new = old.clone();
            let meta = admission::meta_mut(&mut new)?;
            let current = meta
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if meta.get("deletionTimestamp").is_none() || current.is_some_and(|c| grace < c) {
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                let at = jiff::Timestamp::from_second(at.as_second()).unwrap_or(at);
                meta.insert("deletionTimestamp".into(), Value::String(at.to_string()));
                meta.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
            }
            Ok(Next::Write(new))
        };
        let key_ns = if kind.namespaced {
            target.namespace.as_str()
        } else {
            ""
        };
        // Deletion marks touch metadata only: no admission.
        let how = Cas {
            pinned: pinned_rv,
            dry_run: req.dry_run,
            admit: false,
        };
        self.guaranteed_update(kind, key_ns, &target.name, how, &mutate)
            .await
            .map(|(v, _)| v)
    }

    /// Marks a namespace for deletion, as Kubernetes does: `deletionTimestamp`, phase
    /// Terminating and the `kubernetes` finalizer in its spec. No new object may be created
    /// in it; the namespace controller deletes what it holds and then removes the
    /// finalizer, which deletes the namespace.
    async fn delete_namespace(&self, name: &str, dry_run: bool) -> Result<Value> {
        let Some(ns_kind) = kinds::by_resource("namespaces") else {
            return Err(Error::BadRequest("namespaces are not served".into()));
        };
        let mutate = |old: &Value| -> Result<Next> {
            let mut new = old.clone();
            if old.at("/metadata/deletionTimestamp").is_some() {
                return Ok(Next::Write(new));
            }
            admission::meta_mut(&mut new)?
                .insert("deletionTimestamp".into(), Value::String(admission::now()));
            if let Some(map) = new.as_object_mut() {
                map.insert("status".into(), serde_json::json!({"phase": "Terminating"}));
                let spec = map.entry("spec").or_insert_with(|| serde_json::json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert("finalizers".into(), serde_json::json!(["kubernetes"]));
                }
            }
            Ok(Next::Write(new))
        };
        let how = Cas {
            pinned: None,
            dry_run,
            admit: false,
        };
        self.guaranteed_update(ns_kind, "", name, how, &mutate)
            .await
            .map(|(v, _)| v)
    }

    async fn list(&self, kind: &KindInfo, req: &ListRequest) -> Result<ListReply> {
        let labels: LabelSelector = req
            .label_selector
            .parse()
            .map_err(|e| Error::BadRequest(format!("{e}")))?;
        let fields: FieldSelector = req
            .field_selector
            .parse()
            .map_err(|e| Error::BadRequest(format!("{e}")))?;
        let everything = labels.is_empty() && fields.is_empty();
        let prefix = kind.prefix(if kind.namespaced { &req.namespace } else { "" });
        let (mut after, mut rev) = (None, 0);
        if !req.continue_token.is_empty() {
            let (r, k) = decode_continue(&req.continue_token)?;
            if !k.starts_with(&prefix) {
                return Err(Error::BadRequest(
                    "the continue token belongs to another list".into(),
                ));
            }
            rev = r;
            after = Some(k);
        } else {
            self.store.barrier().await?;
        }
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
        let page = if limit == 0 {
            0
        } else {
            (limit as i64).max(500)
        };
        let mut items = Vec::new();
        let mut last_key: Option<String> = None;
        let mut more = false;
        loop {
            let (kvs, has_more, at) = self.store.scan(&prefix, after.as_deref(), rev, page)?;
            rev = at;
            let n = kvs.len();
            for (i, kv) in kvs.iter().enumerate() {
                // Without a selector every object is listed as stored, its resource
                // version put in, as watches send it: decoding and writing it again was
                // most of a large list's cost (an informer's list of every pod, a
                // namespace being emptied). What the scan cannot vouch for is decoded.
                if let Some(json) = everything.then(|| crate::watch::as_stored(kv)).flatten() {
                    items.push(json);
                } else {
                    let obj = self.store.decode(kv)?.object;
                    if labels.matches(&labels_of(&obj)) && fields.matches(&obj) {
                        items.push(to_bytes(&obj));
                    }
                }
                let k = String::from_utf8_lossy(&kv.key).to_string();
                if limit > 0 && items.len() == limit {
                    more = i + 1 < n || has_more;
                    last_key = Some(k);
                    break;
                }
                after = Some(k);
            }
            if last_key.is_some() || !has_more || n == 0 {
                break;
            }
        }
        let continue_token = match (more, last_key) {
            (true, Some(k)) => encode_continue(rev, &k),
            _ => String::new(),
        };
        Ok(ListReply {
            items,
            resource_version: rev.to_string(),
            continue_token,
        })
    }
}

/// The node a Binding names.
fn binding_target(binding: &Value) -> String {
    binding
        .at("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// What binding a pod to `node` does to the stored pod: sets `spec.nodeName` and the
/// PodScheduled condition; a pod bound already is a conflict, one being deleted is invalid.
fn bind_mutation(node: String) -> impl Fn(&Value) -> Result<Next> + Send + Sync {
    move |old: &Value| -> Result<Next> {
        check_binding(old, &node)?;
        let mut new = old.clone();
        bind_pod(&mut new, &node);
        Ok(Next::Write(new))
    }
}

/// Whether the stored pod `old` may be bound to `node`: a pod bound already is a
/// conflict, one being deleted is invalid.
fn check_binding(old: &Value, node: &str) -> Result<()> {
    // The stored pod was admitted whole; binding reads only these two facts of it.
    let bound = old.at("/spec/nodeName").and_then(Value::as_str);
    let deleting = old
        .at("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let errors = bosun_api::admission::validate_binding(bound, deleting, node);
    if errors.is_empty() {
        return Ok(());
    }
    if errors.iter().any(|e| e.field == "spec.nodeName") {
        return Err(Error::Conflict {
            resource: "pods".into(),
            name: name_of(old).into(),
            reason: format!("pod is already assigned to a node: {}", errors[0]),
        });
    }
    Err(Error::Invalid {
        kind: "Binding".into(),
        name: name_of(old).into(),
        errors,
    })
}

/// Binds `pod` (checked by [`check_binding`]) to `node`, in place.
fn bind_pod(pod: &mut Value, node: &str) {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("nodeName".into(), Value::String(node.to_string()));
    }
    let cond = serde_json::json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": admission::now()});
    if let Some(map) = pod.as_object_mut() {
        let status = map.entry("status").or_insert_with(|| serde_json::json!({}));
        if let Some(st) = status.as_object_mut() {
            let conds = st
                .entry("conditions")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = conds.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.push(cond);
            }
        }
    }
}

/// What [`check_binding`] and [`bind_pod`] would store for the stored pod `stored` (its
/// JSON, without `metadata.resourceVersion`), edited in place without building the pod:
/// byte for byte what decoding, binding and encoding it would give; and the pod's
/// identity, for a brief answer. `None` when the slow
/// path must decide: the pod is bound or being deleted (its error comes from there), or it
/// is laid out otherwise than serde_json writes ([`bosun_api::json::Compact`]).
fn bind_stored(stored: &[u8], node: &str, now: &str) -> Option<(Vec<u8>, Value)> {
    if !bosun_api::admission::validate_binding(None, false, node).is_empty() {
        return None;
    }
    let pod = bosun_api::json::Compact::parse(stored)?;
    let meta = pod.members_of("metadata")?;
    if pod.get_in("spec", "nodeName")?.is_some()
        || meta.get("deletionTimestamp")?.is_some()
        || meta.get("resourceVersion")?.is_some()
    {
        return None;
    }
    let mut conditions: Vec<Value> = match pod.get("status")? {
        None => Vec::new(),
        Some(_) => match pod.get_in("status", "conditions")? {
            None => Vec::new(),
            Some(list) => match serde_json::from_slice(list).ok()? {
                Value::Array(list) => list,
                _ => return None,
            },
        },
    };
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
    conditions.push(
        serde_json::json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
    );
    let bound = pod.set_in(&[
        ("spec", "nodeName", &serde_json::to_vec(node).ok()?),
        (
            "status",
            "conditions",
            &serde_json::to_vec(&conditions).ok()?,
        ),
    ])?;
    // Binding changes none of the members a brief answer holds.
    let identity = batch::identity_of(&pod, &meta)?;
    Some((bound, identity))
}

fn conflict(kind: &KindInfo, name: &str) -> Error {
    Error::Conflict {
        resource: kind.resource.into(),
        name: name.into(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// Whether two versions of an object are the same, resource version aside.
fn same_object(a: &Value, b: &Value) -> bool {
    admission::equal_except(a, b, &[])
}

/// Removing the last finalizer of an object that is being deleted deletes it.
/// What a merge patch makes of a stored object (`status_only`: of its status).
fn patch_mutation<'a>(
    kind: &'a KindInfo,
    patch: &'a Value,
    status_only: bool,
) -> impl Fn(&Value) -> Result<Next> + Send + Sync + 'a {
    move |old: &Value| {
        let new = if status_only {
            admission::patch_status(old, patch)
        } else {
            let mut new = old.clone();
            admission::merge_patch(&mut new, patch);
            admission::prepare_update(kind, old, new, false)?
        };
        Ok(finalize_or_write(old, new))
    }
}

/// `new`, replacing `old`, through admission (with the allocator's findings `more`), its
/// generation bumped when its spec changed.
fn admit_update(
    kind: &KindInfo,
    old: &Value,
    new: Value,
    more: Vec<bosun_api::admission::FieldError>,
) -> Result<Value> {
    // Agents' and controllers' status reports, most of all writes: only the status is new.
    let new = if more.is_empty() {
        match admission::admit_status_change(kind, old, new)? {
            Ok(admitted) => return Ok(admitted),
            Err(new) => new,
        }
    } else {
        new
    };
    let mut new = admission::admit(kind, new, Some(old), more)?;
    admission::bump_generation(old, &mut new);
    Ok(new)
}

fn finalize_or_write(old: &Value, new: Value) -> Next {
    if goes_when_written(old, &new) {
        Next::Delete
    } else {
        Next::Write(new)
    }
}

/// Whether writing `new` over `old` deletes the object instead: it is being deleted and
/// nothing holds it any more (no finalizer left, not a pod on a node, not a namespace
/// whose spec holds finalizers).
fn goes_when_written(old: &Value, new: &Value) -> bool {
    let deleting = old.at("/metadata/deletionTimestamp").is_some();
    let finalizers_left = new
        .at("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let pod_on_node = old.at("/spec/nodeName").is_some()
        && old.get("kind").and_then(Value::as_str) == Some("Pod");
    // A namespace also waits for the finalizers in its spec (the namespace controller's).
    let namespace_held = new
        .at("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    deleting && !finalizers_left && !pod_on_node && !namespace_held
}

/// A Job without a selector gets one on its own uid, as Kubernetes generates it.
fn job_selector(obj: &mut Value) {
    if obj.at("/spec/selector").is_some() {
        return;
    }
    let uid = uid_of(obj).to_string();
    let label = "batch.kubernetes.io/controller-uid";
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert(
            "selector".into(),
            serde_json::json!({"matchLabels": {label: uid}}),
        );
        let labels = spec
            .entry("template")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .map(|t| t.entry("metadata").or_insert_with(|| serde_json::json!({})));
        if let Some(Value::Object(m)) = labels {
            let l = m.entry("labels").or_insert_with(|| serde_json::json!({}));
            if let Some(l) = l.as_object_mut() {
                l.insert(label.into(), Value::String(uid.clone()));
                l.insert("controller-uid".into(), Value::String(uid));
            }
        }
    }
}

/// Labels of an object.
pub fn labels_of(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.at("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn encode_continue(rev: i64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rev}\n{key}"))
}

fn decode_continue(token: &str) -> Result<(i64, String)> {
    use base64::Engine;
    let bad = || Error::BadRequest("the continue token is malformed".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (rev, key) = text.split_once('\n').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_string()))
}

type WatchStream = Pin<Box<dyn Stream<Item = std::result::Result<WatchEvent, Status>> + Send>>;

impl ResourceService {
    /// Audits a mutating request and turns its result into the reply.
    fn finish(
        &self,
        user: &UserInfo,
        verb: &str,
        kind: &KindInfo,
        target: (&str, &str, &str),
        res: Result<Value>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        self.record(user, verb, kind, target, &res.as_ref().map(|_| ()));
        Ok(Response::new(ObjectReply {
            object: to_bytes(&res?),
        }))
    }

    fn record(
        &self,
        user: &UserInfo,
        verb: &str,
        kind: &KindInfo,
        target: (&str, &str, &str),
        res: &std::result::Result<(), &Error>,
    ) {
        self.inner
            .audit
            .record(&audit_entry(user, verb, kind, target, res));
    }
}

/// The audit log's entry for one request (or one item of a batch).
fn audit_entry(
    user: &UserInfo,
    verb: &str,
    kind: &KindInfo,
    (sub, ns, name): (&str, &str, &str),
    res: &std::result::Result<(), &Error>,
) -> Entry {
    let (code, message) = match res {
        Ok(()) => ("Ok".to_string(), String::new()),
        Err(e) => {
            let status = Status::from(clone_err(e));
            (format!("{:?}", status.code()), e.to_string())
        }
    };
    Entry {
        time: admission::now(),
        user: user.name.clone(),
        groups: user.groups.clone(),
        verb: verb.to_string(),
        resource: kind.resource.to_string(),
        subresource: sub.to_string(),
        namespace: ns.to_string(),
        name: name.to_string(),
        code,
        message,
    }
}

/// A copy of an error for the audit record's status code (sources are not kept).
fn clone_err(e: &Error) -> Error {
    match e {
        Error::BadRequest(m) => Error::BadRequest(m.clone()),
        Error::Invalid { kind, name, errors } => Error::Invalid {
            kind: kind.clone(),
            name: name.clone(),
            errors: errors.clone(),
        },
        Error::NotFound { resource, name } => Error::NotFound {
            resource: resource.clone(),
            name: name.clone(),
        },
        Error::AlreadyExists { resource, name } => Error::AlreadyExists {
            resource: resource.clone(),
            name: name.clone(),
        },
        Error::Conflict {
            resource,
            name,
            reason,
        } => Error::Conflict {
            resource: resource.clone(),
            name: name.clone(),
            reason: reason.clone(),
        },
        Error::Forbidden(m) => Error::Forbidden(m.clone()),
        Error::Unauthenticated => Error::Unauthenticated,
        Error::Expired {
            requested,
            compacted,
        } => Error::Expired {
            requested: *requested,
            compacted: *compacted,
        },
        Error::Unsupported(m) => Error::Unsupported(m.clone()),
        Error::Exhausted(m) => Error::Exhausted(m.clone()),
        other => Error::Store(bosun_store::Error::Raft(other.to_string())),
    }
}

#[tonic::async_trait]
impl Resources for ResourceService {
    type WatchStream = WatchStream;

    async fn create(
        &self,
        req: Request<WriteRequest>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        let mut obj = parse_object(&r.object, self.inner.max_object_bytes)?;
        if r.subresource == "binding" && kind.resource == "pods" {
            let res = store::fenced(fence, async {
                let name = name_of(&obj).to_string();
                self.inner
                    .authorize(&user, kind, "create", "binding", &r.namespace, &name)?;
                self.inner.bind(kind, &r.namespace, &obj).await
            })
            .await;
            let name = name_of(&obj).to_string();
            return self.finish(&user, "create", kind, ("binding", &r.namespace, &name), res);
        }
        let res = store::fenced(fence, async {
            if !r.subresource.is_empty() {
                return Err(Error::Unsupported(format!(
                    "creating subresource {:?} of {}",
                    r.subresource, kind.resource
                )));
            }
            admission::check_type(kind, &mut obj, &r.namespace)?;
            let (ns, name) = (namespace_of(&obj).to_string(), name_of(&obj).to_string());
            self.inner
                .authorize(&user, kind, "create", "", &ns, &name)?;
            self.inner.create(kind, obj.clone(), r.dry_run).await
        })
        .await;
        self.finish(
            &user,
            "create",
            kind,
            ("", &r.namespace, name_of(&obj)),
            res,
        )
    }

    async fn create_batch(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> std::result::Result<Response<BatchReply>, Status> {
        self.create_batch_call(req).await
    }

    async fn patch_batch(
        &self,
        req: Request<BatchPatchRequest>,
    ) -> std::result::Result<Response<BatchReply>, Status> {
        self.patch_batch_call(req).await
    }

    async fn get(
        &self,
        req: Request<GetRequest>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        let user = caller(&req)?;
        let t = req.into_inner().target.unwrap_or_default();
        let kind = kind_of(&t.resource)?;
        self.inner
            .authorize(&user, kind, "get", &t.subresource, &t.namespace, &t.name)?;
        self.inner.store.barrier().await?;
        let ns = if kind.namespaced {
            t.namespace.as_str()
        } else {
            ""
        };
        match self.inner.store.get(&kind.key(ns, &t.name))? {
            Some(s) => Ok(Response::new(ObjectReply {
                object: to_bytes(&s.object),
            })),
            None => Err(Error::NotFound {
                resource: kind.resource.into(),
                name: t.name,
            }
            .into()),
        }
    }

    async fn list(
        &self,
        req: Request<ListRequest>,
    ) -> std::result::Result<Response<ListReply>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        self.inner
            .authorize(&user, kind, "list", "", &r.namespace, "")?;
        Ok(Response::new(self.inner.list(kind, &r).await?))
    }

    async fn update(
        &self,
        req: Request<WriteRequest>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        let mut obj = parse_object(&r.object, self.inner.max_object_bytes)?;
        let res = store::fenced(fence, async {
            admission::check_type(kind, &mut obj, &r.namespace)?;
            let (ns, name) = (namespace_of(&obj).to_string(), name_of(&obj).to_string());
            self.inner
                .authorize(&user, kind, "update", &r.subresource, &ns, &name)?;
            self.inner
                .update(kind, &ns, &r.subresource, obj.clone(), r.dry_run)
                .await
        })
        .await;
        self.finish(
            &user,
            "update",
            kind,
            (&r.subresource, namespace_of(&obj), name_of(&obj)),
            res,
        )
    }

    async fn patch(
        &self,
        req: Request<PatchRequest>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let t = r.target.clone().unwrap_or_default();
        let kind = kind_of(&t.resource)?;
        let res = store::fenced(fence, async {
            let patch = parse_object(&r.patch, self.inner.max_object_bytes)?;
            self.inner
                .authorize(&user, kind, "patch", &t.subresource, &t.namespace, &t.name)?;
            let t = Target {
                namespace: if kind.namespaced {
                    t.namespace.clone()
                } else {
                    String::new()
                },
                ..t.clone()
            };
            self.inner.patch(kind, &t, patch, r.dry_run).await
        })
        .await;
        self.finish(
            &user,
            "patch",
            kind,
            (&t.subresource, &t.namespace, &t.name),
            res,
        )
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> std::result::Result<Response<ObjectReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let t = r.target.clone().unwrap_or_default();
        let kind = kind_of(&t.resource)?;
        let res = store::fenced(fence, async {
            self.inner
                .authorize(&user, kind, "delete", "", &t.namespace, &t.name)?;
            self.inner.delete(kind, &r).await
        })
        .await;
        self.finish(&user, "delete", kind, ("", &t.namespace, &t.name), res)
    }

    async fn apply(
        &self,
        req: Request<ApplyRequest>,
    ) -> std::result::Result<Response<ApplyReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let mut obj = parse_object(&r.object, self.inner.max_object_bytes)?;
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind_name = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = kinds::by_kind(&api_version, &kind_name).ok_or_else(|| {
            Error::BadRequest(format!(
                "no kind {kind_name:?} is registered for version {api_version:?} (bosun serves: {})",
                kinds::KINDS.iter().map(|k| format!("{} {}", k.api_version(), k.kind)).collect::<Vec<_>>().join(", ")
            ))
        })?;
        // The request's namespace is a default: a manifest that names one keeps it.
        let default_ns = if namespace_of(&obj).is_empty() {
            r.namespace.clone()
        } else {
            String::new()
        };
        let res = store::fenced(fence, async {
            admission::check_type(kind, &mut obj, &default_ns)?;
            self.inner.apply(&user, kind, obj.clone(), r.dry_run).await
        })
        .await;
        self.record(
            &user,
            "apply",
            kind,
            ("", namespace_of(&obj), name_of(&obj)),
            &res.as_ref().map(|_| ()),
        );
        let (obj, outcome) = res?;
        Ok(Response::new(ApplyReply {
            object: to_bytes(&obj),
            outcome: outcome.into(),
        }))
    }

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> std::result::Result<Response<Self::WatchStream>, Status> {
        let user = caller(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        self.inner
            .authorize(&user, kind, "watch", "", &r.namespace, "")?;
        let rx = crate::watch::start(self.inner.clone(), kind, r).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn review(
        &self,
        req: Request<ReviewRequest>,
    ) -> std::result::Result<Response<ReviewReply>, Status> {
        let me = caller(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        let who = if r.user.is_empty() {
            me
        } else {
            // Asking on behalf of someone else is impersonation: administrators only.
            if !me.groups.iter().any(|g| g == crate::rbac::SUPERUSER_GROUP) {
                return Err(Error::Forbidden(format!(
                    "user {:?} cannot impersonate user {:?}",
                    me.name, r.user
                ))
                .into());
            }
            let mut groups = r.groups.clone();
            groups.push(crate::authz::AUTHENTICATED.into());
            UserInfo {
                name: r.user.clone(),
                groups,
            }
        };
        let pod_node = if crate::rbac::node_name(&who).is_some() {
            self.inner.node_of_pod(kind, &r.namespace, &r.name)
        } else {
            None
        };
        let d = self.inner.authz.decide(
            &who,
            &attrs(kind, &r.verb, &r.subresource, &r.namespace, &r.name),
            pod_node.as_deref(),
        );
        let allowed = d.allowed();
        let reason = match d {
            crate::rbac::Decision::Allow(w) | crate::rbac::Decision::Deny(w) => w,
        };
        Ok(Response::new(ReviewReply { allowed, reason }))
    }

    async fn discover(
        &self,
        req: Request<DiscoverRequest>,
    ) -> std::result::Result<Response<DiscoverReply>, Status> {
        caller(&req)?;
        let kinds = kinds::KINDS
            .iter()
            .map(|k| Kind {
                kind: k.kind.into(),
                api_version: k.api_version(),
                resource: k.resource.into(),
                singular: k.singular.into(),
                short_names: k.short_names.iter().map(|s| s.to_string()).collect(),
                namespaced: k.namespaced,
            })
            .collect();
        Ok(Response::new(DiscoverReply { kinds }))
    }
}

impl Inner {
    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }
    /// Tasks of watch streams (closed and awaited at shutdown).
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
    /// The shutdown token.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
    /// What the server's watches share.
    pub(crate) fn watch_memo(&self) -> &crate::watch::memo::Memo {
        &self.watch_memo
    }
}

/// Idle time after which a watch with bookmarks sends one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

mod batch;
mod pods;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(meta: Value, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }

    #[test]
    fn binding_sets_the_node_and_the_scheduled_condition() {
        let old = pod(
            json!({"name": "p", "namespace": "d", "deletionTimestamp": null}),
            json!({"containers": [{"name": "c", "image": "i"}]}),
        );
        let Ok(Next::Write(new)) = bind_mutation("node-1".into())(&old) else {
            panic!("binding an unbound pod failed");
        };
        assert_eq!(new.at("/spec/nodeName"), Some(&json!("node-1")));
        assert_eq!(
            new.at("/status/conditions/0/type"),
            Some(&json!("PodScheduled"))
        );
        assert_eq!(new.at("/spec/containers"), old.at("/spec/containers"));
    }

    #[test]
    fn binding_a_bound_deleted_or_misnamed_target_is_refused_as_before() {
        let bound = pod(json!({"name": "p"}), json!({"nodeName": "node-2"}));
        match bind_mutation("node-1".into())(&bound) {
            Err(Error::Conflict { reason, .. }) => {
                assert!(reason.contains("already assigned"), "{reason}")
            }
            other => panic!("bound pod: {:?}", other.map(|_| ())),
        }
        let deleting = pod(
            json!({"name": "p", "deletionTimestamp": "2026-12-05T07:00:00Z"}),
            json!({}),
        );
        match bind_mutation("node-1".into())(&deleting) {
            Err(Error::Invalid { errors, .. }) => {
                assert_eq!(errors[0].field, "metadata.deletionTimestamp")
            }
            other => panic!("deleting pod: {:?}", other.map(|_| ())),
        }
        match bind_mutation("Node_1".into())(&pod(json!({"name": "p"}), json!({}))) {
            Err(Error::Invalid { errors, .. }) => assert_eq!(errors[0].field, "target.name"),
            other => panic!("bad node name: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn binding_in_the_stored_json_stores_what_the_slow_path_would() {
        let now = "2026-12-07T17:00:00Z";
        let containers = json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "100m"}}}], "schedulerName": "default-scheduler"});
        let meta = json!({"name": "p", "namespace": "d", "uid": "u", "generation": 1,
            "labels": {"app": "web"}, "ownerReferences": [{"controller": true, "uid": "rs"}]});
        let pods = [
            pod(meta.clone(), containers.clone()),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": containers,
                "status": {"phase": "Pending"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {},
                "status": {"conditions": [{"type": "PodScheduled", "status": "False"},
                    {"type": "Ready", "status": "False"}], "phase": "Pending"}}),
            json!({"metadata": {"name": "p"}, "spec": {"a": "x"}, "status": {"conditions": []}}),
        ];
        for old in pods {
            let stored = serde_json::to_vec(&old).unwrap_or_default();
            let mut slow = old.clone();
            bind_pod(&mut slow, "node-1");
            // The slow path's condition carries its own clock: the same one here.
            if let Some(c) = slow["status"]["conditions"]
                .as_array_mut()
                .and_then(|c| c.last_mut())
            {
                c["lastTransitionTime"] = json!(now);
            }
            let (bound, identity) = bind_stored(&stored, "node-1", now).unzip();
            assert_eq!(bound, serde_json::to_vec(&slow).ok(), "{old}");
            assert_eq!(identity, Some(batch::identity(&slow)), "{old}");
        }
        // What the slow path refuses, or must look at, it decides.
        for old in [
            pod(json!({"name": "p"}), json!({"nodeName": "node-2"})),
            pod(
                json!({"name": "p", "deletionTimestamp": "2026-12-05T07:00:00Z"}),
                json!({}),
            ),
            pod(json!({"name": "p", "deletionTimestamp": null}), json!({})),
            pod(json!({"name": "p", "resourceVersion": "4"}), json!({})),
            pod(json!({"name": "p"}), json!("not an object")),
            json!({"metadata": {"name": "p"}}),
            json!({"metadata": {"name": "p"}, "spec": {}, "status": {"conditions": {}}}),
        ] {
            let stored = serde_json::to_vec(&old).unwrap_or_default();
            assert!(bind_stored(&stored, "node-1", now).is_none(), "{old}");
        }
        let fine = serde_json::to_vec(&pod(json!({"name": "p"}), json!({}))).unwrap_or_default();
        assert!(
            bind_stored(&fine, "Node_1", now).is_none(),
            "a bad node name"
        );
        assert!(bind_stored(b"{\"metadata\": {}}", "node-1", now).is_none());
    }
}
