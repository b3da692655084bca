//! `CreateBatch` and `PatchBatch`: many creates, pod bindings or patches, in few store
//! transactions.
//!
//! Every item gets what Create would have answered for it alone: it is authorized,
//! admitted and audited on its own. The items that pass are written together, in
//! transactions of at most [`TXN_ITEMS`] items and [`TXN_BYTES`] bytes, each guarded per
//! item (a created key is absent; a bound or patched object is unchanged since it was read) and by the
//! namespaces the items go into. When the guards of such a transaction fail, nothing of it
//! was written: the transaction reads which guards failed, the items whose own guards held
//! are written together once more (a generated name that a concurrent batch took must not
//! send hundreds of pods down the slow path), and the rest go one by one through the
//! single-item path, which says precisely why an item fails (or, for a generated name,
//! generates another). When the store fails (no leader), every item of the
//! transaction gets that error: none is retried, so an item is never written twice.

use bosun_api::json::At;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bosun_api::kinds::KindInfo;
use bosun_api::resources::{BatchItem, BatchPatchRequest, BatchReply, BatchWriteRequest, Target};
use bosun_store::command::{Compare, Op, RangeReq};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::{
    admit_update, bind_pod, bind_stored, binding_target, check_binding, clone_err, conflict,
    fence_of, goes_when_written, kind_of, parse_object, patch_mutation, rv_of, same_object,
    to_bytes, Inner, Next, ResourceService,
};
use crate::admission::{self, name_of, namespace_of};
use crate::authz::caller;
use crate::error::{Error, Result};
use crate::store;

/// Objects in one request at most.
pub const MAX_ITEMS: usize = 1000;
/// Items written in one store transaction at most.
const TXN_ITEMS: usize = 500;
/// Bytes of values written in one store transaction at most.
const TXN_BYTES: usize = 1 << 20;

/// One item ready to be written.
struct Planned {
    /// Its place in the request.
    index: usize,
    key: String,
    /// The object to store, and its encoding.
    object: Value,
    encoded: Vec<u8>,
    /// The guard: the key is absent (0), or was last modified at this revision.
    mod_revision: i64,
}

/// Refuses a batch of more than [`MAX_ITEMS`] `what`, whole.
fn within_batch_limit(n: usize, what: &str) -> Result<()> {
    if n > MAX_ITEMS {
        return Err(Error::BadRequest(format!(
            "a batch holds at most {MAX_ITEMS} {what}; this one has {n}"
        )));
    }
    Ok(())
}

/// What a patch of a batch comes to, read against the stored object.
enum PatchPlan {
    /// Write this.
    Write(Planned),
    /// Nothing changes: answer this (the object as stored).
    Unchanged(Value),
    /// It deletes the object (its last finalizer goes): the single-item path does that.
    Alone,
}

/// Splits `planned` into transactions within [`TXN_ITEMS`] and [`TXN_BYTES`].
fn chunks(planned: Vec<Planned>) -> Vec<Vec<Planned>> {
    let mut out: Vec<Vec<Planned>> = Vec::new();
    let mut bytes = 0;
    for p in planned {
        let full = out
            .last()
            .is_none_or(|c| c.len() >= TXN_ITEMS || bytes + p.encoded.len() > TXN_BYTES);
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += p.encoded.len();
        if let Some(c) = out.last_mut() {
            c.push(p);
        }
    }
    out
}

/// How one transaction of a batch went.
enum Outcome {
    /// Written at this revision.
    Written(i64),
    /// A guard failed: nothing was written. Per item of the transaction, whether its own
    /// guard failed; and whether one of the extra guards (the namespaces') did.
    Guarded { items: Vec<bool>, extra: bool },
}

impl Inner {
    /// Writes `chunk` in one transaction, guarded by each item's revision and by
    /// `extra` (the namespaces'). When a guard fails, the transaction reads the guarded
    /// keys (without values) to tell which.
    async fn write_chunk(&self, chunk: &[Planned], extra: &[Compare]) -> Result<Outcome> {
        let guards = || -> Vec<Compare> {
            chunk
                .iter()
                .map(|p| match p.mod_revision {
                    0 => store::absent(&p.key),
                    rev => store::unchanged_since(&p.key, rev),
                })
                .chain(extra.iter().cloned())
                .collect()
        };
        let compare = guards();
        let success: Vec<Op> = chunk
            .iter()
            .map(|p| store::put_raw(&p.key, p.encoded.clone()))
            .collect();
        let failure: Vec<Op> = compare
            .iter()
            .map(|c| {
                Op::Range(RangeReq {
                    range: c.range.clone(),
                    keys_only: true,
                    ..Default::default()
                })
            })
            .collect();
        let (rev, res) = self.store.txn(compare, success, failure).await?;
        if res.succeeded {
            return Ok(Outcome::Written(rev));
        }
        // Rare: the guards are built again to tell which failed.
        let found = store::reads(&res);
        let failed: Vec<bool> = guards()
            .iter()
            .enumerate()
            .map(|(i, c)| match found.get(i) {
                Some(kv) => !c.holds_for(kv.as_ref()),
                None => true,
            })
            .collect();
        let (items, extra) = failed.split_at(chunk.len().min(failed.len()));
        Ok(Outcome::Guarded {
            items: items.to_vec(),
            extra: extra.iter().any(|f| *f),
        })
    }

    /// Writes the planned items in transactions; fills `out` for the ones written and
    /// for the ones the store failed; leaves `None` where a guard failed.
    async fn write_planned(
        &self,
        planned: Vec<Planned>,
        guards: &(dyn Fn(&[Planned]) -> Vec<Compare> + Sync),
        out: &mut [Option<Result<Value>>],
    ) {
        for chunk in chunks(planned) {
            self.write_guarded(chunk, guards, out).await;
        }
    }

    /// Writes one transaction's items. When the guards of a few of them fail (a name
    /// that a concurrent batch took, a pod changed meanwhile), the others are tried once
    /// more together; the items left go alone.
    async fn write_guarded(
        &self,
        mut chunk: Vec<Planned>,
        guards: &(dyn Fn(&[Planned]) -> Vec<Compare> + Sync),
        out: &mut [Option<Result<Value>>],
    ) {
        for attempt in 0..2 {
            let extra = guards(&chunk);
            match self.write_chunk(&chunk, &extra).await {
                Ok(Outcome::Written(rev)) => {
                    for mut p in chunk {
                        store::set_resource_version(&mut p.object, rev);
                        out[p.index] = Some(Ok(p.object));
                    }
                    return;
                }
                Ok(Outcome::Guarded { items, extra }) => {
                    tracing::debug!(
                        items = chunk.len(),
                        failed = items.iter().filter(|f| **f).count(),
                        namespace_changed = extra,
                        attempt,
                        "a batch transaction's guards failed"
                    );
                    if extra || attempt > 0 {
                        return;
                    }
                    chunk = chunk
                        .into_iter()
                        .zip(items)
                        .filter_map(|(p, failed)| (!failed).then_some(p))
                        .collect();
                    if chunk.is_empty() {
                        return;
                    }
                }
                Err(e) => {
                    for p in chunk {
                        out[p.index] = Some(Err(clone_err(&e)));
                    }
                    return;
                }
            }
        }
    }

    /// Creates `objs` (each already type-checked and authorized), as [`Inner::create`]
    /// would one by one. Consecutive items that are one shared object (copies of a
    /// template, decoded once) are admitted once: see [`admission::Copies`].
    /// A `brief` caller gets each created object's identity only ([`identity`]).
    pub(crate) async fn create_many(
        &self,
        kind: &KindInfo,
        objs: Vec<Arc<Value>>,
        dry_run: bool,
        brief: bool,
    ) -> Vec<Result<Value>> {
        let mut out: Vec<Option<Result<Value>>> = (0..objs.len()).map(|_| None).collect();
        // Services allocate cluster IPs and node ports, each a guarded write of its own;
        // a dry run writes nothing. Both take the single path.
        if kind.resource != "services" && !dry_run {
            // Planning reads this server's state (namespaces, taken names): first catch
            // up with everything committed, or a namespace created a moment ago through
            // another server looks missing.
            if let Err(e) = self.store.barrier().await {
                return objs.iter().map(|_| Err(clone_err(&e))).collect();
            }
            let mut planned = Vec::new();
            let mut keys = HashSet::new();
            // namespace -> its revision (0: missing), read once per batch.
            let mut namespaces: BTreeMap<String, i64> = BTreeMap::new();
            // The last item admitted in full, and what copies of it are made from.
            let mut template: Option<(&Arc<Value>, admission::Copies, Option<StoredCopies>)> = None;
            for (index, obj) in objs.iter().enumerate() {
                let plan = match &template {
                    Some((src, copies, stored)) if Arc::ptr_eq(src, obj) => {
                        self.plan_next_copy(kind, copies, stored.as_ref())
                    }
                    _ => {
                        // Copies are prepared only for an item the next one repeats.
                        let repeated = objs.get(index + 1).is_some_and(|n| Arc::ptr_eq(n, obj));
                        let (plan, copies) = self.plan_create(kind, obj, repeated, &mut namespaces);
                        // A brief answer needs no object: copies are then made from the
                        // template's JSON.
                        let stored = match (&plan, &copies) {
                            (Ok(p), Some(_)) if brief => StoredCopies::of(p),
                            _ => None,
                        };
                        template = copies.map(|c| (obj, c, stored));
                        plan
                    }
                };
                match plan {
                    // The same name twice in one batch, or a name this server sees taken:
                    // it goes alone (and is told it exists), not failing the others' guard.
                    Ok(p) if !keys.insert(p.key.clone()) => {}
                    Ok(p) if self.store.exists(&p.key).unwrap_or(true) => {}
                    Ok(p) => planned.push(Planned { index, ..p }),
                    Err(e) => out[index] = Some(Err(e)),
                }
            }
            let guards = |chunk: &[Planned]| -> Vec<Compare> {
                let mut seen = HashSet::new();
                chunk
                    .iter()
                    .filter_map(|p| {
                        let ns = namespace_of(&p.object);
                        let key = super::Inner::namespace_key(kind, ns)?;
                        if !seen.insert(key.clone()) {
                            return None;
                        }
                        let rev = namespaces.get(ns).copied().unwrap_or(0);
                        Some(store::unchanged_since(&key, rev))
                    })
                    .collect()
            };
            self.write_planned(planned, &guards, &mut out).await;
        }
        let mut results = Vec::with_capacity(out.len());
        for (slot, obj) in out.into_iter().zip(objs) {
            results.push(match slot {
                Some(r) => r,
                None => self.create(kind, Arc::unwrap_or_clone(obj), dry_run).await,
            });
        }
        results
    }

    /// Admits and encodes one object to create, checking its namespace (read once per
    /// batch into `namespaces`); with what copies of it are made from, when `repeated`
    /// and they can be.
    fn plan_create(
        &self,
        kind: &KindInfo,
        input: &Value,
        repeated: bool,
        namespaces: &mut BTreeMap<String, i64>,
    ) -> (Result<Planned>, Option<admission::Copies>) {
        let mut obj = input.clone();
        if let Err(e) = admission::prepare_create(kind, &mut obj) {
            return (Err(e), None);
        }
        if kind.kind == "Job" {
            super::job_selector(&mut obj);
        }
        // To check that the typed pass left the generated fields alone.
        let prepared = admission::generated_fields(&obj);
        let obj = match admission::admit(kind, obj, None, Vec::new()) {
            Ok(obj) => obj,
            Err(e) => return (Err(e), None),
        };
        if let Err(e) = self.check_namespace(kind, namespace_of(&obj), namespaces) {
            return (Err(e), None);
        }
        let copies = repeated
            .then(|| admission::Copies::of(kind, input, &prepared, &obj))
            .flatten();
        (self.plan_copy(kind, obj), copies)
    }

    /// Fails when `ns` (read once per batch into `namespaces`) is missing or being
    /// deleted, for a namespaced kind.
    fn check_namespace(
        &self,
        kind: &KindInfo,
        ns: &str,
        namespaces: &mut BTreeMap<String, i64>,
    ) -> Result<()> {
        let Some(ns_key) = super::Inner::namespace_key(kind, ns) else {
            return Ok(());
        };
        let rev = match namespaces.get(ns) {
            Some(rev) => *rev,
            None => {
                let rev = match self.store.get(&ns_key)? {
                    Some(n) if n.object.at("/metadata/deletionTimestamp").is_some() => -1,
                    Some(n) => n.mod_revision,
                    None => 0,
                };
                namespaces.insert(ns.to_string(), rev);
                rev
            }
        };
        match rev {
            -1 => Err(Error::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            0 => Err(Error::NotFound {
                resource: "namespaces".into(),
                name: ns.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// One more copy of a template: made from the template's JSON when there is that
    /// ([`StoredCopies`]), else admitted and encoded as [`Inner::plan_copy`] does.
    fn plan_next_copy(
        &self,
        kind: &KindInfo,
        copies: &admission::Copies,
        stored: Option<&StoredCopies>,
    ) -> Result<Planned> {
        let fresh = copies.fresh();
        let Some((encoded, object)) = stored.and_then(|s| s.copy(&fresh)) else {
            return self.plan_copy(kind, copies.copy_with(fresh));
        };
        let key = kind.key(namespace_of(&object), name_of(&object));
        self.within_limit(kind, name_of(&object), &encoded)?;
        Ok(Planned {
            index: 0,
            key,
            object,
            encoded,
            mod_revision: 0,
        })
    }

    /// Encodes an admitted object to create, in a namespace already checked.
    fn plan_copy(&self, kind: &KindInfo, obj: Value) -> Result<Planned> {
        let key = kind.key(namespace_of(&obj), name_of(&obj));
        let encoded = self.encode_within_limit(kind, &key, &obj)?;
        Ok(Planned {
            index: 0,
            key,
            object: obj,
            encoded,
            mod_revision: 0,
        })
    }

    /// Binds pods: `bindings` are (namespace, Binding), each already authorized; as
    /// [`Inner::bind`] would one by one.
    /// A `brief` caller gets each bound pod's identity only ([`identity`]).
    pub(crate) async fn bind_many(
        &self,
        kind: &KindInfo,
        bindings: Vec<(String, Value)>,
        brief: bool,
    ) -> Vec<Result<Value>> {
        let mut out: Vec<Option<Result<Value>>> = (0..bindings.len()).map(|_| None).collect();
        match self.store.barrier().await {
            Err(e) => return bindings.iter().map(|_| Err(clone_err(&e))).collect(),
            Ok(()) => {
                let mut planned = Vec::new();
                let mut keys = HashSet::new();
                for (index, (ns, binding)) in bindings.iter().enumerate() {
                    match self.plan_binding(kind, ns, binding, brief) {
                        Ok(p) if !keys.insert(p.key.clone()) => {}
                        Ok(p) => planned.push(Planned { index, ..p }),
                        Err(e) => out[index] = Some(Err(e)),
                    }
                }
                self.write_planned(planned, &|_| Vec::new(), &mut out).await;
            }
        }
        let mut results = Vec::with_capacity(out.len());
        for (slot, (ns, binding)) in out.into_iter().zip(bindings) {
            results.push(match slot {
                Some(r) => r,
                None => self.bind(kind, &ns, &binding).await,
            });
        }
        results
    }

    /// Reads the pod a binding names and computes it bound. A `brief` answer needs only
    /// the pod's identity: then the pod is bound in its stored JSON, not decoded.
    fn plan_binding(
        &self,
        kind: &KindInfo,
        ns: &str,
        binding: &Value,
        brief: bool,
    ) -> Result<Planned> {
        let name = name_of(binding);
        let key = kind.key(ns, name);
        let node = binding_target(binding);
        let (stored, mod_revision) = self.store.get_json(&key)?.ok_or_else(|| Error::NotFound {
            resource: kind.resource.into(),
            name: name.into(),
        })?;
        // Pods are never stored encrypted: the bytes bound are the bytes to store.
        if let Some((encoded, identity)) = bind_stored(&stored, &node, &admission::now()) {
            self.within_limit(kind, name, &encoded)?;
            let object = if brief {
                identity
            } else {
                decode(&key, &encoded)?
            };
            return Ok(Planned {
                index: 0,
                key,
                object,
                encoded,
                mod_revision,
            });
        }
        // Bound already, being deleted (the checks below say so), or laid out otherwise.
        let mut object = decode(&key, &stored)?;
        check_binding(&object, &node)?;
        bind_pod(&mut object, &node);
        store::set_resource_version(&mut object, mod_revision);
        let encoded = self.encode_within_limit(kind, &key, &object)?;
        Ok(Planned {
            index: 0,
            key,
            object,
            encoded,
            mod_revision,
        })
    }
}

/// Copies of a template in their stored form, for a brief batch of creates: the
/// template's JSON, where its generated name, uid and creationTimestamp are in it, and its
/// identity. A copy is that JSON with those three strings replaced: byte for byte what
/// encoding [`admission::Copies::copy_with`]'s object gives, as copies differ in nothing
/// else.
struct StoredCopies {
    json: Vec<u8>,
    /// Where the generated fields' values are, in [`admission::GeneratedFields`]' order.
    at: [std::ops::Range<usize>; 3],
    identity: Value,
}

impl StoredCopies {
    /// `None` for JSON the scan cannot vouch for (an encrypted object among it).
    fn of(template: &Planned) -> Option<Self> {
        let obj = bosun_api::json::Compact::parse(&template.encoded)?;
        let meta = obj.members_of("metadata")?;
        let at = [
            meta.span("name")??,
            meta.span("uid")??,
            meta.span("creationTimestamp")??,
        ];
        let identity = identity_of(&obj, &meta)?;
        Some(StoredCopies {
            json: template.encoded.clone(),
            at,
            identity,
        })
    }

    /// The copy with the generated fields `fresh`: its JSON and its identity.
    fn copy(&self, fresh: &[String; 3]) -> Option<(Vec<u8>, Value)> {
        let mut order = [0, 1, 2];
        order.sort_by_key(|i| self.at[*i].start);
        let mut json = Vec::with_capacity(self.json.len() + 16);
        let mut from = 0;
        for i in order {
            json.extend_from_slice(self.json.get(from..self.at[i].start)?);
            serde_json::to_writer(&mut json, &fresh[i]).ok()?;
            from = self.at[i].end;
        }
        json.extend_from_slice(self.json.get(from..)?);
        let mut identity = self.identity.clone();
        if let Some(meta) = identity.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), Value::String(fresh[0].clone()));
            meta.insert("uid".into(), Value::String(fresh[1].clone()));
        }
        Some((json, identity))
    }
}

/// A stored object's JSON, decoded.
fn decode(key: &str, json: &[u8]) -> Result<Value> {
    bosun_api::json::from_bytes(json).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl Inner {
    /// Patches objects: `items` are (namespace, name, merge patch), each already
    /// authorized; as [`Inner::patch`] would one by one.
    pub(crate) async fn patch_many(
        &self,
        kind: &KindInfo,
        sub: &str,
        items: Vec<(String, String, Value)>,
        dry_run: bool,
    ) -> Vec<Result<Value>> {
        let mut out: Vec<Option<Result<Value>>> = (0..items.len()).map(|_| None).collect();
        // Services allocate cluster IPs and node ports; a dry run writes nothing. Both
        // take the single path.
        if kind.resource != "services" && !dry_run {
            if let Err(e) = self.store.barrier().await {
                return items.iter().map(|_| Err(clone_err(&e))).collect();
            }
            let mut planned = Vec::new();
            let mut keys = HashSet::new();
            for (index, (ns, name, patch)) in items.iter().enumerate() {
                match self.plan_patch(kind, sub, ns, name, patch) {
                    // The same object twice: the later patch goes alone, after the batch.
                    Ok(PatchPlan::Write(p)) if !keys.insert(p.key.clone()) => {}
                    Ok(PatchPlan::Write(p)) => planned.push(Planned { index, ..p }),
                    Ok(PatchPlan::Unchanged(v)) => out[index] = Some(Ok(v)),
                    Ok(PatchPlan::Alone) => {}
                    Err(e) => out[index] = Some(Err(e)),
                }
            }
            self.write_planned(planned, &|_| Vec::new(), &mut out).await;
        }
        let mut results = Vec::with_capacity(out.len());
        for (slot, (ns, name, patch)) in out.into_iter().zip(items) {
            results.push(match slot {
                Some(r) => r,
                None => {
                    let target = Target {
                        resource: kind.resource.into(),
                        namespace: ns,
                        name,
                        subresource: sub.into(),
                    };
                    self.patch(kind, &target, patch, dry_run).await
                }
            });
        }
        results
    }

    /// Reads the object a patch names and computes it patched and admitted.
    fn plan_patch(
        &self,
        kind: &KindInfo,
        sub: &str,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<PatchPlan> {
        let pinned = rv_of(patch)?;
        let key = kind.key(ns, name);
        let stored = self.store.get(&key)?.ok_or_else(|| Error::NotFound {
            resource: kind.resource.into(),
            name: name.into(),
        })?;
        if pinned.is_some_and(|rv| rv != stored.mod_revision) {
            return Err(conflict(kind, name));
        }
        let store::Stored {
            object: old,
            mod_revision,
            stale_encryption,
        } = stored;
        // A status report changes nothing else: the stored object, owned, takes the new
        // status in place ([`admission::patch_status_owned`]).
        let in_place = if sub == "status" && !goes_when_written(&old, &old) {
            admission::patch_status_owned(kind, old, patch)?
        } else {
            Err(old)
        };
        let (object, changed) = match in_place {
            Ok(p) => (p.object, p.changed),
            Err(old) => {
                let new = match patch_mutation(kind, patch, sub == "status")(&old)? {
                    Next::Write(v) => v,
                    Next::Delete => return Ok(PatchPlan::Alone),
                };
                let mut object = admit_update(kind, &old, new, Vec::new())?;
                store::set_resource_version(&mut object, mod_revision);
                let changed = !same_object(&object, &old);
                (object, changed)
            }
        };
        if !changed && !stale_encryption {
            return Ok(PatchPlan::Unchanged(object));
        }
        let encoded = self.encode_within_limit(kind, &key, &object)?;
        Ok(PatchPlan::Write(Planned {
            index: 0,
            key,
            object,
            encoded,
            mod_revision,
        }))
    }
}

/// One item of a batch as checked: its namespace and name (for the audit), and its
/// namespace and object, or why it is refused.
type CheckedItem = ((String, String), Result<(String, Arc<Value>)>);

/// The same answer for one more item alike to the one checked.
fn again((ident, checked): &CheckedItem) -> CheckedItem {
    let checked = match checked {
        Ok((ns, obj)) => Ok((ns.clone(), Arc::clone(obj))),
        Err(e) => Err(clone_err(e)),
    };
    (ident.clone(), checked)
}

impl ResourceService {
    /// Parses, type-checks and authorizes one item: its namespace and name (for the
    /// audit), and the object, or why it is refused.
    fn check_item(
        &self,
        user: &crate::rbac::UserInfo,
        kind: &KindInfo,
        binding: bool,
        namespace: &str,
        bytes: &[u8],
    ) -> ((String, String), Result<(String, Value)>) {
        let mut ident = (namespace.to_string(), String::new());
        let mut check = || -> Result<(String, Value)> {
            let mut obj = parse_object(bytes, self.inner.max_object_bytes)?;
            let ns = if binding {
                match namespace_of(&obj) {
                    "" => namespace.to_string(),
                    ns => ns.to_string(),
                }
            } else {
                admission::check_type(kind, &mut obj, namespace)?;
                namespace_of(&obj).to_string()
            };
            ident = (ns.clone(), name_of(&obj).to_string());
            let sub = if binding { "binding" } else { "" };
            self.inner
                .authorize(user, kind, "create", sub, &ns, name_of(&obj))?;
            Ok((ns, obj))
        };
        let res = check();
        (ident, res)
    }

    /// The `CreateBatch` call.
    pub(super) async fn create_batch_call(
        &self,
        req: Request<BatchWriteRequest>,
    ) -> std::result::Result<Response<BatchReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        within_batch_limit(r.objects.len(), "objects")?;
        let binding = match r.subresource.as_str() {
            "" => false,
            "binding" if kind.resource == "pods" => true,
            other => {
                return Err(Error::Unsupported(format!(
                    "creating subresource {other:?} of {}",
                    kind.resource
                ))
                .into())
            }
        };
        let sub = if binding { "binding" } else { "" };
        let n = r.objects.len();
        // Per item: its namespace and name (for the audit), and what was answered.
        let mut names: Vec<(String, String)> = Vec::with_capacity(n);
        let mut out: Vec<Option<Result<Value>>> = (0..n).map(|_| None).collect();
        let mut accepted: Vec<(usize, String, Arc<Value>)> = Vec::new();
        // An item alike byte for byte to the one before (a controller's copies of one
        // template) is that item again: decoded and checked once, one object shared.
        let mut last: Option<(&[u8], CheckedItem)> = None;
        for (i, bytes) in r.objects.iter().enumerate() {
            let (ident, checked) = match &last {
                Some((b, item)) if *b == bytes.as_slice() => again(item),
                _ => {
                    let (ident, checked) =
                        self.check_item(&user, kind, binding, &r.namespace, bytes);
                    let item = (ident, checked.map(|(ns, obj)| (ns, Arc::new(obj))));
                    // Kept only for an item the next one repeats: distinct items (a
                    // scheduler's bindings) are not cloned for a reuse that never comes.
                    if r.objects.get(i + 1) == Some(bytes) {
                        let next = again(&item);
                        last = Some((bytes.as_slice(), item));
                        next
                    } else {
                        last = None;
                        item
                    }
                }
            };
            names.push(ident);
            match checked {
                Ok((ns, obj)) => accepted.push((i, ns, obj)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        // Its share of the last object goes first, so that a binding below takes the
        // object it decoded without copying it.
        drop(last);
        let indices: Vec<usize> = accepted.iter().map(|(i, _, _)| *i).collect();
        let results = store::fenced(fence, async {
            if binding {
                let items = accepted
                    .into_iter()
                    .map(|(_, ns, o)| (ns, Arc::unwrap_or_clone(o)))
                    .collect();
                self.inner.bind_many(kind, items, r.brief).await
            } else {
                let items = accepted.into_iter().map(|(_, _, o)| o).collect();
                self.inner
                    .create_many(kind, items, r.dry_run, r.brief)
                    .await
            }
        })
        .await;
        for (i, res) in indices.into_iter().zip(results) {
            out[i] = Some(res);
        }
        let verb = Verb {
            verb: "create",
            sub,
            name_from_answer: !binding,
        };
        Ok(Response::new(
            self.answer(&user, kind, verb, &names, out, r.brief),
        ))
    }

    /// The `PatchBatch` call.
    pub(super) async fn patch_batch_call(
        &self,
        req: Request<BatchPatchRequest>,
    ) -> std::result::Result<Response<BatchReply>, Status> {
        let user = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        let kind = kind_of(&r.resource)?;
        within_batch_limit(r.items.len(), "patches")?;
        let sub = r.subresource.as_str();
        match sub {
            "" => {}
            "status" if kind.has_status => {}
            "status" => {
                return Err(Error::BadRequest(format!(
                    "{} have no status subresource",
                    kind.resource
                ))
                .into())
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "patching subresource {other:?} of {}",
                    kind.resource
                ))
                .into())
            }
        }
        let n = r.items.len();
        let mut names: Vec<(String, String)> = Vec::with_capacity(n);
        let mut out: Vec<Option<Result<Value>>> = (0..n).map(|_| None).collect();
        let mut accepted: Vec<(usize, (String, String, Value))> = Vec::new();
        for (i, item) in r.items.into_iter().enumerate() {
            let ns = if kind.namespaced {
                item.namespace
            } else {
                String::new()
            };
            names.push((ns.clone(), item.name.clone()));
            let checked = parse_object(&item.patch, self.inner.max_object_bytes).and_then(|p| {
                self.inner
                    .authorize(&user, kind, "patch", sub, &ns, &item.name)?;
                Ok(p)
            });
            match checked {
                Ok(patch) => accepted.push((i, (ns, item.name, patch))),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let (indices, items): (Vec<usize>, Vec<_>) = accepted.into_iter().unzip();
        let results = store::fenced(fence, async {
            self.inner.patch_many(kind, sub, items, r.dry_run).await
        })
        .await;
        for (i, res) in indices.into_iter().zip(results) {
            out[i] = Some(res);
        }
        let verb = Verb {
            verb: "patch",
            sub,
            name_from_answer: false,
        };
        Ok(Response::new(
            self.answer(&user, kind, verb, &names, out, r.brief),
        ))
    }

    /// Audits every item of a batch and builds the reply: `names` are the items'
    /// namespaces and names, `out` their answers.
    fn answer(
        &self,
        user: &crate::rbac::UserInfo,
        kind: &KindInfo,
        verb: Verb<'_>,
        names: &[(String, String)],
        out: Vec<Option<Result<Value>>>,
        brief: bool,
    ) -> BatchReply {
        let mut items = Vec::with_capacity(out.len());
        let mut audit = Vec::with_capacity(out.len());
        for (slot, (ns, name)) in out.into_iter().zip(names) {
            // Every slot is filled by the caller: an item refused before the store, or
            // answered.
            let res =
                slot.unwrap_or_else(|| Err(Error::Exhausted("the item was not handled".into())));
            let name = match &res {
                Ok(obj) if verb.name_from_answer => name_of(obj).to_string(),
                _ => name.clone(),
            };
            audit.push(super::audit_entry(
                user,
                verb.verb,
                kind,
                (verb.sub, ns, &name),
                &res.as_ref().map(|_| ()),
            ));
            items.push(match res {
                Ok(obj) => BatchItem {
                    object: if brief {
                        to_bytes(&identity(&obj))
                    } else {
                        to_bytes(&obj)
                    },
                    code: 0,
                    message: String::new(),
                },
                Err(e) => {
                    let status = Status::from(e);
                    BatchItem {
                        object: Vec::new(),
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    }
                }
            });
        }
        self.inner.audit.record_all(&audit);
        BatchReply { items }
    }
}

/// How a batch's items are audited.
#[derive(Clone, Copy)]
struct Verb<'a> {
    verb: &'static str,
    sub: &'a str,
    /// The item's name is the answered object's (a created object's name may be
    /// generated).
    name_from_answer: bool,
}

/// The members a brief answer holds: these at the top, [`IDENTITY_META`] of its metadata.
const IDENTITY: [&str; 2] = ["apiVersion", "kind"];
const IDENTITY_META: [&str; 5] = ["name", "namespace", "uid", "resourceVersion", "generation"];

/// What a brief answer tells of an object: its kind and who it is, at which version.
pub(super) fn identity(obj: &Value) -> Value {
    let pick = |from: Option<&Value>, keys: &[&str]| -> serde_json::Map<String, Value> {
        keys.iter()
            .filter_map(|k| Some((k.to_string(), from?.get(*k)?.clone())))
            .collect()
    };
    let mut out = pick(Some(obj), &IDENTITY);
    out.insert(
        "metadata".to_string(),
        Value::Object(pick(obj.get("metadata"), &IDENTITY_META)),
    );
    Value::Object(out)
}

/// [`identity`] of a stored object, read from its JSON (`meta`: its metadata's members)
/// without building it; `None` for a layout other than serde_json's.
pub(super) fn identity_of<'a>(
    obj: &bosun_api::json::Compact<'a>,
    meta: &bosun_api::json::Members<'a>,
) -> Option<Value> {
    fn pick<'a>(
        keys: &[&str],
        get: impl Fn(&str) -> Option<Option<&'a [u8]>>,
    ) -> Option<serde_json::Map<String, Value>> {
        let mut out = serde_json::Map::new();
        for k in keys {
            if let Some(raw) = get(k)? {
                out.insert(k.to_string(), serde_json::from_slice(raw).ok()?);
            }
        }
        Some(out)
    }
    let mut out = pick(&IDENTITY, |k| obj.get(k))?;
    out.insert(
        "metadata".to_string(),
        Value::Object(pick(&IDENTITY_META, |k| meta.get(k))?),
    );
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_made_from_the_template_json_is_the_copy_encoded() {
        let kind = bosun_api::kinds::by_resource("pods").unwrap();
        let input = admission::tests::replica_template();
        let mut obj = input.clone();
        admission::prepare_create(kind, &mut obj).unwrap();
        let prepared = admission::generated_fields(&obj);
        let first = admission::admit(kind, obj, None, Vec::new()).unwrap();
        let copies = admission::Copies::of(kind, &input, &prepared, &first).unwrap();
        let template = Planned {
            index: 0,
            key: String::new(),
            encoded: serde_json::to_vec(&first).unwrap(),
            object: first,
            mod_revision: 0,
        };
        let stored = StoredCopies::of(&template).expect("a template serde_json wrote");
        for _ in 0..3 {
            let fresh = copies.fresh();
            let (json, brief) = stored.copy(&fresh).unwrap();
            let copy = copies.copy_with(fresh);
            assert_eq!(json, serde_json::to_vec(&copy).unwrap());
            assert_eq!(brief, identity(&copy));
        }
        // An encrypted template (a Secret's) is copied the slow way.
        let encrypted = Planned {
            encoded: b"k8s:enc:aesgcm:v1:key1:...".to_vec(),
            ..template
        };
        assert!(StoredCopies::of(&encrypted).is_none());
    }
}
