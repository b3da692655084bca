//! Admission: the typed pass every object goes through before it is written (strict
//! decoding into the k8s-openapi type, defaulting, validation), and the fields the server
//! owns (uid, creationTimestamp, generation, generateName, status on create).

use bosun_api::json::At;
use std::marker::PhantomData;

use bosun_api::admission::{Admit, FieldError, FieldErrorKind};
use bosun_api::kinds::KindInfo;
use k8s_openapi::api::{apps, batch, coordination, core, rbac};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The typed pass of one kind.
trait Typed: Send + Sync {
    /// Decodes strictly, defaults, validates (against `old` for updates) and encodes back.
    fn admit(&self, obj: Value, old: Option<&Value>)
        -> std::result::Result<Value, Vec<FieldError>>;

    /// Decodes a status strictly and encodes it back; `None` when the kind has no status.
    /// No kind's defaulting or validation looks at its status, so this is all the typed
    /// pass does to one.
    fn admit_status(&self, status: &Value) -> Option<std::result::Result<Value, Vec<FieldError>>>;
}

/// A kind without a status.
struct As<T>(PhantomData<fn() -> T>);

/// A kind with a status of type `S`.
struct WithStatus<T, S>(PhantomData<fn() -> (T, S)>);

fn encode_error(e: serde_json::Error) -> Vec<FieldError> {
    vec![FieldError {
        field: String::new(),
        kind: FieldErrorKind::Invalid(String::new()),
        detail: e.to_string(),
    }]
}

/// Decodes `v` into `T`, naming the field where that fails, under `prefix`.
fn decode<T: DeserializeOwned>(v: &Value, prefix: &str) -> std::result::Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix.is_empty(), path.as_str()) {
            (true, _) => path,
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{path}"),
        };
        vec![FieldError {
            field,
            kind: FieldErrorKind::Invalid(String::new()),
            detail: e.inner().to_string(),
        }]
    })
}

impl<T: Admit + Serialize + DeserializeOwned, S: Serialize + DeserializeOwned> Typed
    for WithStatus<T, S>
{
    fn admit(
        &self,
        obj: Value,
        old: Option<&Value>,
    ) -> std::result::Result<Value, Vec<FieldError>> {
        As::<T>(PhantomData).admit(obj, old)
    }

    fn admit_status(&self, status: &Value) -> Option<std::result::Result<Value, Vec<FieldError>>> {
        let typed: S = match decode(status, "status") {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let out = serde_json::to_value(&typed).map_err(encode_error);
        let mut errors = Vec::new();
        if let Ok(out) = &out {
            unknown_fields(status, out, "status", &mut errors);
        }
        Some(if errors.is_empty() { out } else { Err(errors) })
    }
}

impl<T: Admit + Serialize + DeserializeOwned> Typed for As<T> {
    fn admit_status(&self, _: &Value) -> Option<std::result::Result<Value, Vec<FieldError>>> {
        None
    }

    fn admit(
        &self,
        obj: Value,
        old: Option<&Value>,
    ) -> std::result::Result<Value, Vec<FieldError>> {
        // Decoded from a reference: the input is kept, to find the fields the type drops.
        let mut typed: T = decode(&obj, "")?;
        typed.default_fields();
        let mut invalid = typed.validate();
        if let Some(old) = old {
            // The stored object passed admission when written; if it no longer decodes,
            // there is nothing to compare immutable fields against.
            if let Ok(old) = <T as serde::Deserialize>::deserialize(old) {
                invalid.extend(typed.validate_update(&old));
            }
        }
        let out = serde_json::to_value(&typed).map_err(encode_error)?;
        // What the input has and the output lacks: the type dropped it, or defaulting
        // folded it into another field (a Secret's stringData). Only when something is
        // missing is the input decoded again, to tell which.
        let mut errors = Vec::new();
        unknown_fields(&obj, &out, "", &mut errors);
        if !errors.is_empty() {
            errors.clear();
            let undefaulted = <T as serde::Deserialize>::deserialize(&obj).map_err(encode_error)?;
            let round = serde_json::to_value(&undefaulted).map_err(encode_error)?;
            unknown_fields(&obj, &round, "", &mut errors);
        }
        errors.extend(invalid);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(out)
    }
}

/// Fields of the input that the typed round trip dropped: Kubernetes' strict field
/// validation (kubectl's default) refuses them, so a typo never silently vanishes.
fn unknown_fields(input: &Value, round: &Value, path: &str, out: &mut Vec<FieldError>) {
    match (input, round) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => unknown_fields(v, w, &p, out),
                    None if v.is_null() => {}
                    None => out.push(FieldError {
                        field: p,
                        kind: FieldErrorKind::Forbidden,
                        detail: "unknown field".into(),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn typed(kind: &KindInfo) -> Option<&'static dyn Typed> {
    macro_rules! of {
        ($t:ty) => {{
            const T: As<$t> = As(PhantomData);
            Some(&T as &'static dyn Typed)
        }};
        ($t:ty, $s:ty) => {{
            const T: WithStatus<$t, $s> = WithStatus(PhantomData);
            Some(&T as &'static dyn Typed)
        }};
    }
    match kind.kind {
        "Namespace" => of!(core::v1::Namespace, core::v1::NamespaceStatus),
        "Node" => of!(core::v1::Node, core::v1::NodeStatus),
        "Pod" => of!(core::v1::Pod, core::v1::PodStatus),
        "Service" => of!(core::v1::Service, core::v1::ServiceStatus),
        "Endpoints" => of!(core::v1::Endpoints),
        "ConfigMap" => of!(core::v1::ConfigMap),
        "Secret" => of!(core::v1::Secret),
        "Event" => of!(core::v1::Event),
        "ReplicaSet" => of!(apps::v1::ReplicaSet, apps::v1::ReplicaSetStatus),
        "Deployment" => of!(apps::v1::Deployment, apps::v1::DeploymentStatus),
        "DaemonSet" => of!(apps::v1::DaemonSet, apps::v1::DaemonSetStatus),
        "Job" => of!(batch::v1::Job, batch::v1::JobStatus),
        "Lease" => of!(coordination::v1::Lease),
        "Role" => of!(rbac::v1::Role),
        "ClusterRole" => of!(rbac::v1::ClusterRole),
        "RoleBinding" => of!(rbac::v1::RoleBinding),
        "ClusterRoleBinding" => of!(rbac::v1::ClusterRoleBinding),
        _ => None,
    }
}

/// Runs the typed pass; every problem is reported at once, naming its field, with `more`
/// (problems found outside the typed pass, such as a Service's requested values against
/// the server's ranges: see [`crate::allocator::check`]) in the same refusal.
///
/// # Errors
/// [`Error::Invalid`] listing every offending field.
pub fn admit(
    kind: &KindInfo,
    obj: Value,
    old: Option<&Value>,
    more: Vec<FieldError>,
) -> Result<Value> {
    let name = name_of(&obj).to_string();
    let Some(t) = typed(kind) else {
        return Err(Error::Unsupported(format!("kind {}", kind.kind)));
    };
    let invalid = |errors| Error::Invalid {
        kind: kind.kind.to_string(),
        name,
        errors,
    };
    match t.admit(obj, old) {
        Err(mut errors) => {
            errors.extend(more);
            Err(invalid(errors))
        }
        Ok(_) if !more.is_empty() => Err(invalid(more)),
        Ok(v) => Ok(v),
    }
}

/// Admits an update that changes nothing but the status (and the resourceVersion) of an
/// object that was admitted when written: only its status goes through the typed pass, as
/// the rest is the stored object's. `Ok(Err(new))`, handing `new` back, when anything else
/// changed or the kind has no status: then the whole object goes through [`admit`].
///
/// # Errors
/// [`Error::Invalid`] naming the status fields that do not decode or are unknown.
pub fn admit_status_change(
    kind: &KindInfo,
    old: &Value,
    mut new: Value,
) -> Result<std::result::Result<Value, Value>> {
    let t = match typed(kind) {
        Some(t) if kind.has_status && equal_except(old, &new, &["status"]) => t,
        _ => return Ok(Err(new)),
    };
    let Some(map) = new.as_object_mut() else {
        return Ok(Err(new));
    };
    let admitted = match map.get("status") {
        None | Some(Value::Null) => None,
        Some(status) => match t.admit_status(status) {
            None => return Ok(Err(new)),
            Some(Ok(admitted)) => Some(admitted),
            Some(Err(errors)) => {
                return Err(Error::Invalid {
                    kind: kind.kind.to_string(),
                    name: name_of(old).to_string(),
                    errors,
                })
            }
        },
    };
    match admitted {
        Some(a) => map.insert("status".into(), a),
        None => map.remove("status"),
    };
    Ok(Ok(new))
}

/// Whether `a` and `b` are equal but for their top-level fields `skip` and their
/// `metadata.resourceVersion` (compared in place, without copies).
pub fn equal_except(a: &Value, b: &Value, skip: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let same_map = |a: &Map<String, Value>, b: &Map<String, Value>, skip: &dyn Fn(&str) -> bool| {
        let (mut na, mut nb) = (0, 0);
        for (k, v) in a {
            if skip(k) {
                continue;
            }
            na += 1;
            if b.get(k) != Some(v) {
                return false;
            }
        }
        for k in b.keys() {
            if !skip(k) {
                nb += 1;
            }
        }
        na == nb
    };
    let top = |k: &str| k == "metadata" || skip.contains(&k);
    if !same_map(a, b, &top) {
        return false;
    }
    match (a.get("metadata"), b.get("metadata")) {
        (Some(Value::Object(ma)), Some(Value::Object(mb))) => {
            same_map(ma, mb, &|k: &str| k == "resourceVersion")
        }
        (ma, mb) => ma == mb,
    }
}

/// `metadata.name`, or "".
pub fn name_of(obj: &Value) -> &str {
    obj.at("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "".
pub fn namespace_of(obj: &Value) -> &str {
    obj.at("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid`, or "".
pub fn uid_of(obj: &Value) -> &str {
    obj.at("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion`, or "".
pub fn resource_version_of(obj: &Value) -> &str {
    obj.at("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The mutable `metadata` map, created when missing.
///
/// # Errors
/// When the object or its metadata is not a JSON object.
pub fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| Error::BadRequest("the object must be a JSON object".into()))?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
        .ok_or_else(|| Error::BadRequest("metadata must be an object".into()))
}

/// Checks `apiVersion` and `kind` against the resource addressed (filling them when
/// absent) and the namespace against the request's.
///
/// # Errors
/// [`Error::BadRequest`] on a mismatch.
pub fn check_type(kind: &KindInfo, obj: &mut Value, namespace: &str) -> Result<()> {
    let api_version = kind.api_version();
    {
        let map = obj
            .as_object_mut()
            .ok_or_else(|| Error::BadRequest("the object must be a JSON object".into()))?;
        for (field, want) in [("apiVersion", api_version.as_str()), ("kind", kind.kind)] {
            match map.get(field) {
                None | Some(Value::Null) => {
                    map.insert(field.into(), Value::String(want.into()));
                }
                Some(Value::String(s)) if s == want => {}
                Some(other) => {
                    return Err(Error::BadRequest(format!(
                        "{field} {other} does not match the resource {} ({api_version} {})",
                        kind.resource, kind.kind
                    )))
                }
            }
        }
    }
    let meta = meta_mut(obj)?;
    if kind.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                if namespace.is_empty() {
                    return Err(Error::BadRequest(format!(
                        "{} are namespaced: a namespace is required",
                        kind.resource
                    )));
                }
                meta.insert("namespace".into(), Value::String(namespace.into()));
            }
            Some(ns) if namespace.is_empty() || ns == namespace => {}
            Some(ns) => {
                return Err(Error::BadRequest(format!(
                    "the namespace of the object ({ns}) does not match the namespace of the request ({namespace})"
                )))
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The current time as Kubernetes writes it (RFC 3339, seconds).
pub fn now() -> String {
    let ts = jiff::Timestamp::now();
    let secs = ts.as_second();
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// `generateName` + 5 random characters, as Kubernetes does it.
fn generated_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Fills what the server owns on create: name from generateName, uid, creationTimestamp,
/// generation, the initial status; drops what a client may not set.
///
/// # Errors
/// When neither name nor generateName is given.
pub fn prepare_create(kind: &KindInfo, obj: &mut Value) -> Result<()> {
    let has_spec = obj.get("spec").is_some();
    let meta = meta_mut(obj)?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(base) if !base.is_empty() => {
                let n = generated_name(base);
                meta.insert("name".into(), Value::String(n));
            }
            _ => {
                return Err(Error::Invalid {
                    kind: kind.kind.to_string(),
                    name: String::new(),
                    errors: vec![FieldError {
                        field: "metadata.name".into(),
                        kind: FieldErrorKind::Required,
                        detail: "name or generateName is required".into(),
                    }],
                })
            }
        }
    }
    meta.insert("uid".into(), Value::String(new_uid()));
    meta.insert("creationTimestamp".into(), Value::String(now()));
    for owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(owned);
    }
    if has_spec {
        meta.insert("generation".into(), Value::from(1));
    } else {
        meta.remove("generation");
    }
    if kind.has_status {
        if let Some(map) = obj.as_object_mut() {
            match kind.kind {
                // Agents register Nodes with their status.
                "Node" => {}
                "Namespace" => {
                    map.insert("status".into(), serde_json::json!({"phase": "Active"}));
                }
                "Pod" => {
                    map.insert("status".into(), serde_json::json!({"phase": "Pending"}));
                }
                _ => {
                    map.remove("status");
                }
            }
        }
    }
    Ok(())
}

/// metadata.name, uid and creationTimestamp, as [`prepare_create`] generates them.
pub type GeneratedFields = [Option<String>; 3];

/// An object's [`GeneratedFields`].
pub fn generated_fields(obj: &Value) -> GeneratedFields {
    [
        "/metadata/name",
        "/metadata/uid",
        "/metadata/creationTimestamp",
    ]
    .map(|at| obj.at(at).and_then(Value::as_str).map(str::to_string))
}

/// An admitted object that stands for more objects created from the same request: a
/// controller's batch of pods from one template. Each copy differs from it only in what
/// [`prepare_create`] generates (name from generateName, uid, creationTimestamp), so the
/// typed pass, which reads none of those but the name's form, is run once for the batch.
pub struct Copies {
    admitted: Value,
    /// The generateName each copy's name is made from.
    base: String,
}

impl Copies {
    /// Copies of `admitted`, the outcome of [`prepare_create`] and [`admit`] on `input`,
    /// when that is sound: `input` names nothing but has a generateName, the kind's
    /// admission reads no generated field (a Job's selector holds its uid), and the typed
    /// pass kept the generated fields as they were after [`prepare_create`] (`prepared`,
    /// from [`generated_fields`]), so that setting new ones gives what admitting a copy
    /// would. A generated name's validity is the same for every copy: the base is the
    /// same, and the suffix is always 5 lowercase letters and digits.
    pub fn of(
        kind: &KindInfo,
        input: &Value,
        prepared: &GeneratedFields,
        admitted: &Value,
    ) -> Option<Self> {
        if kind.kind == "Job" || kind.kind == "Service" {
            return None;
        }
        let meta = input.get("metadata")?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return None;
        }
        let base = meta.get("generateName")?.as_str()?;
        if base.is_empty() {
            return None;
        }
        let kept = generated_fields(admitted);
        (prepared.iter().all(Option::is_some) && kept == *prepared).then(|| Copies {
            admitted: admitted.clone(),
            base: base.to_string(),
        })
    }

    /// What the next copy gets: a new name, uid and creationTimestamp (in
    /// [`GeneratedFields`]' order).
    pub fn fresh(&self) -> [String; 3] {
        [generated_name(&self.base), new_uid(), now()]
    }

    /// One more copy, with a new name, uid and creationTimestamp.
    pub fn copy(&self) -> Value {
        self.copy_with(self.fresh())
    }

    /// The copy with these generated fields ([`Copies::fresh`]).
    pub fn copy_with(&self, [name, uid, created]: [String; 3]) -> Value {
        let mut obj = self.admitted.clone();
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), Value::String(name));
            meta.insert("uid".into(), Value::String(uid));
            meta.insert("creationTimestamp".into(), Value::String(created));
        }
        obj
    }
}

/// What a status subresource has come to: the object patched and admitted, and whether
/// anything in it changed.
pub struct PatchedStatus {
    pub object: Value,
    pub changed: bool,
}

/// A merge patch of the status subresource applied to the stored object `old`, owned, and
/// admitted: what [`patch_status`] and then [`admit_status_change`] give, and whether the
/// result differs from `old`, without copying anything but the status. Agents send one
/// such patch per pod for every change they see; copying and comparing the whole pod was
/// most of its cost. `Ok(Err(old))`, handing `old` back, for a kind whose status has no
/// typed pass: the caller takes the general path.
///
/// # Errors
/// [`Error::Invalid`] naming the status fields that do not decode or are unknown.
pub fn patch_status_owned(
    kind: &KindInfo,
    mut old: Value,
    patch: &Value,
) -> Result<std::result::Result<PatchedStatus, Value>> {
    let t = match typed(kind) {
        Some(t) if kind.has_status && old.is_object() => t,
        _ => return Ok(Err(old)),
    };
    let name = name_of(&old).to_string();
    let Some(map) = old.as_object_mut() else {
        return Ok(Err(old));
    };
    let was = map.remove("status");
    let merged = match patch.get("status").filter(|s| !s.is_null()) {
        Some(p) => {
            let mut s = was.clone().unwrap_or(Value::Null);
            merge_patch(&mut s, p);
            Some(s)
        }
        None => was.clone(),
    };
    let admitted = match merged {
        None | Some(Value::Null) => None,
        Some(status) => match t.admit_status(&status) {
            // No typed status after all: as it was, for the general path.
            None => {
                if let Some(w) = was {
                    map.insert("status".into(), w);
                }
                return Ok(Err(old));
            }
            Some(Ok(a)) => Some(a),
            Some(Err(errors)) => {
                return Err(Error::Invalid {
                    kind: kind.kind.to_string(),
                    name,
                    errors,
                })
            }
        },
    };
    let changed = admitted != was;
    if let Some(a) = admitted {
        map.insert("status".into(), a);
    }
    Ok(Ok(PatchedStatus {
        object: old,
        changed,
    }))
}

/// A merge patch of the status subresource applied to `old`: what [`merge_patch`] onto a
/// copy of `old` and then [`prepare_update`] of the status gives (the patch's status
/// merged into the old one, and the resourceVersion it names), made with one copy of
/// `old` instead of two: agents send one such patch per pod for every change they see.
pub fn patch_status(old: &Value, patch: &Value) -> Value {
    let mut out = old.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    // What the merged object's metadata.resourceVersion would read.
    let rv = match patch.as_object().map(|p| p.get("metadata")) {
        None => String::new(),
        Some(None) => resource_version_of(old).to_string(),
        Some(Some(meta)) => match meta.as_object().map(|m| m.get("resourceVersion")) {
            Some(None) => resource_version_of(old).to_string(),
            Some(Some(rv)) => rv.as_str().unwrap_or("").to_string(),
            None => String::new(),
        },
    };
    if let Some(status) = patch.get("status").filter(|s| !s.is_null()) {
        merge_patch(map.entry("status").or_insert(Value::Null), status);
    }
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv));
    }
    out
}

/// Carries the server-owned fields of `old` into `new` on update, keeps the part the
/// request may not change (status on the main resource; everything but status on the
/// status subresource). Generation is bumped after admission ([`bump_generation`]).
///
/// # Errors
/// When the update renames the object or changes its uid.
pub fn prepare_update(
    kind: &KindInfo,
    old: &Value,
    mut new: Value,
    status_only: bool,
) -> Result<Value> {
    if status_only {
        let mut out = old.clone();
        if let (Some(map), Some(status)) = (out.as_object_mut(), new.get("status")) {
            map.insert("status".into(), status.clone());
        }
        if let (Some(meta), rv) = (
            out.get_mut("metadata").and_then(Value::as_object_mut),
            resource_version_of(&new),
        ) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        return Ok(out);
    }
    if name_of(&new) != name_of(old) {
        return Err(Error::BadRequest(format!(
            "metadata.name: the name of an object cannot change ({:?} to {:?})",
            name_of(old),
            name_of(&new)
        )));
    }
    let new_uid = uid_of(&new);
    if !new_uid.is_empty() && new_uid != uid_of(old) {
        return Err(Error::Conflict {
            resource: kind.resource.to_string(),
            name: name_of(old).to_string(),
            reason: format!(
                "Precondition failed: UID in object meta: {new_uid}, UID in storage: {}",
                uid_of(old)
            ),
        });
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    if kind.has_status {
        if let Some(map) = new.as_object_mut() {
            match old.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
    }
    let meta = meta_mut(&mut new)?;
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    Ok(new)
}

/// Bumps `metadata.generation` when the spec of the admitted (defaulted) object differs
/// from the stored one: a change that defaulting undoes is no change.
pub fn bump_generation(old: &Value, new: &mut Value) {
    if new.get("spec") == old.get("spec") {
        return;
    }
    let g = old
        .at("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Ok(meta) = meta_mut(new) {
        meta.insert("generation".into(), Value::from(g + 1));
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge patch that `kubectl apply` sends: from the last applied manifest to the new
/// one, fields removed from the manifest become deletions; fields the manifest sets win
/// over the live object; fields only the live object has (set by others) stay.
pub fn apply_patch(last: &Value, desired: &Value, live: &Value) -> Value {
    match (last, desired) {
        (_, Value::Object(d)) => {
            let mut out = Map::new();
            let empty = Map::new();
            let l = last.as_object().unwrap_or(&empty);
            let live_map = live.as_object().unwrap_or(&empty);
            for k in l.keys() {
                if !d.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            for (k, v) in d {
                let live_v = live_map.get(k).unwrap_or(&Value::Null);
                let last_v = l.get(k).unwrap_or(&Value::Null);
                if v.is_object() && live_v.is_object() {
                    let sub = apply_patch(last_v, v, live_v);
                    if sub.as_object().is_some_and(|m| !m.is_empty()) {
                        out.insert(k.clone(), sub);
                    }
                } else if v != live_v {
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
        (_, other) => other.clone(),
    }
}

/// The annotation `kubectl apply` keeps the last applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_removed_from_the_manifest_is_removed_from_the_object() {
        let last = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}});
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "1"}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "by-someone-else"}}, "data": {"x": "1"}});
        let patch = apply_patch(&last, &desired, &live);
        assert_eq!(patch, json!({"metadata": {"labels": {"b": null}}}));
        let mut out = live.clone();
        merge_patch(&mut out, &patch);
        assert_eq!(
            out["metadata"]["labels"],
            json!({"a": "1", "c": "by-someone-else"})
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn uids_are_version_4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    fn admitted_pod() -> (&'static KindInfo, Value) {
        let kind = bosun_api::kinds::by_resource("pods").unwrap();
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "bosun/busybox",
                "resources": {"limits": {"memory": "64Mi"}}}]}});
        prepare_create(kind, &mut pod).unwrap();
        let mut pod = admit(kind, pod, None, Vec::new()).unwrap();
        pod["metadata"]["resourceVersion"] = json!("7");
        (kind, pod)
    }

    #[test]
    fn a_status_change_admits_only_the_status_and_matches_the_whole_pass() {
        let (kind, old) = admitted_pod();
        let mut new = old.clone();
        new["metadata"]["resourceVersion"] = json!("8");
        new["status"] = json!({"phase": "Running", "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "bosun/busybox", "imageID": "",
                "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]});
        let fast = admit_status_change(kind, &old, new.clone())
            .unwrap()
            .unwrap();
        let whole = admit(kind, new, Some(&old), Vec::new()).unwrap();
        assert_eq!(fast, whole);
        assert_eq!(fast["status"]["phase"], "Running");
        assert_eq!(fast["metadata"]["resourceVersion"], "8");
    }

    #[test]
    fn a_status_patch_in_place_is_what_the_general_path_makes() {
        let (kind, pod) = admitted_pod();
        let running = json!({"phase": "Running", "podIP": "10.0.0.5", "hostIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T00:00:00Z"}],
            "containerStatuses": [{"name": "c", "image": "bosun/busybox", "imageID": "",
                "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]});
        let mut with_status = pod.clone();
        with_status["status"] = running.clone();
        let mut null_status = pod.clone();
        null_status["status"] = Value::Null;
        let olds = [pod.clone(), with_status, null_status];
        let patches = [
            json!({"status": running}),
            json!({"metadata": {"resourceVersion": "7"}, "status": {"phase": "Succeeded"}}),
            json!({"status": {"podIP": null, "conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"status": null}),
            json!({"metadata": {"labels": {"app": "ignored"}}}),
            json!({"status": {"phase": "Running"}}),
            json!({"status": {"bogus": 1}}),
        ];
        for old in &olds {
            for patch in &patches {
                // The general path: patched, admitted, stamped, compared.
                let general = admit_status_change(kind, old, patch_status(old, patch)).map(|r| {
                    let mut v = r.expect("a pod's status change is admitted by its status");
                    v["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    let changed = !equal_except(&v, old, &[]);
                    (v, changed)
                });
                let owned = patch_status_owned(kind, old.clone(), patch).map(|r| {
                    let p = r.expect("a pod has a typed status");
                    (p.object, p.changed)
                });
                match (general, owned) {
                    (Ok(g), Ok(o)) => {
                        assert_eq!(o, g, "{old} patched by {patch}");
                        let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
                        assert_eq!(bytes(&o.0), bytes(&g.0), "{old} patched by {patch}");
                    }
                    (Err(g), Err(o)) => assert_eq!(o.to_string(), g.to_string()),
                    (g, o) => panic!("{old} patched by {patch}: {g:?} against {o:?}"),
                }
            }
        }
        // A kind without a typed status is handed back as it came.
        let cm = bosun_api::kinds::by_resource("configmaps").unwrap();
        let obj = json!({"metadata": {"name": "c"}, "data": {}});
        let back = patch_status_owned(cm, obj.clone(), &json!({"status": {"x": 1}})).unwrap();
        assert_eq!(back.err(), Some(obj));
    }

    #[test]
    fn a_bad_status_is_refused_naming_its_field() {
        let (kind, old) = admitted_pod();
        for (status, field) in [
            (json!({"phase": "Running", "bogus": 1}), "status.bogus"),
            (json!({"phase": 5}), "status.phase"),
            (
                json!({"conditions": [{"type": "Ready", "status": "True", "x": 1}]}),
                "status.conditions[0].x",
            ),
        ] {
            let mut new = old.clone();
            new["status"] = status.clone();
            match admit_status_change(kind, &old, new) {
                Err(Error::Invalid { errors, name, .. }) => {
                    assert_eq!(name, "p");
                    assert_eq!(errors.len(), 1, "{status}: {errors:?}");
                    assert_eq!(errors[0].field, field, "{status}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn anything_but_a_status_change_takes_the_whole_pass() {
        let (kind, old) = admitted_pod();
        let mut new = old.clone();
        new["status"] = json!({"phase": "Running"});
        new["metadata"]["labels"]["app"] = json!("db");
        let back = admit_status_change(kind, &old, new.clone()).unwrap();
        assert_eq!(back.unwrap_err(), new, "handed back unchanged");
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("bosun/busybox:v2");
        assert!(admit_status_change(kind, &old, new).unwrap().is_err());
        let cm = bosun_api::kinds::by_resource("configmaps").unwrap();
        let obj = json!({"metadata": {"name": "c"}, "data": {}});
        assert!(admit_status_change(cm, &obj, obj.clone()).unwrap().is_err());
        // No status at all: the object keeps none.
        let mut new = old.clone();
        new["status"] = Value::Null;
        let out = admit_status_change(kind, &old, new).unwrap().unwrap();
        assert!(out.get("status").is_none());
    }

    #[test]
    fn equal_except_ignores_only_what_it_is_told_and_the_resource_version() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "spec": {"x": 1}, "status": {"y": 1}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        assert!(equal_except(&a, &b, &[]));
        b["status"]["y"] = json!(2);
        assert!(!equal_except(&a, &b, &[]));
        assert!(equal_except(&a, &b, &["status"]));
        b["metadata"]["labels"] = json!({"l": "v"});
        assert!(!equal_except(&a, &b, &["status"]));
        let mut c = a.clone();
        c.as_object_mut().unwrap().remove("spec");
        assert!(!equal_except(&a, &c, &["status"]));
        assert!(!equal_except(&c, &a, &["status"]));
        c["spec"] = json!({"x": 1});
        c.as_object_mut().unwrap().remove("status");
        assert!(equal_except(&a, &c, &["status"]));
    }

    #[test]
    fn unknown_fields_are_named() {
        let mut out = Vec::new();
        unknown_fields(
            &json!({"spec": {"replicas": 1, "replica": 2, "template": {"x": null}}}),
            &json!({"spec": {"replicas": 1, "template": {}}}),
            "",
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "spec.replica");
    }

    #[test]
    fn a_status_patch_is_what_merging_it_into_a_copy_then_keeping_the_status_gives() {
        let kind = bosun_api::kinds::by_resource("pods").unwrap();
        let olds = [
            json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}},
                "spec": {"nodeName": "n1"}, "status": {"phase": "Pending", "conditions": [{"type": "Ready"}]}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
            json!({"kind": "Pod", "metadata": "odd", "status": "odd"}),
            json!(["not", "an", "object"]),
        ];
        let patches = [
            json!({"status": {"phase": "Running", "podIP": "10.0.0.2"}}),
            json!({"status": {"phase": null, "conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"status": null}),
            json!({"status": "flat"}),
            json!({"metadata": {"resourceVersion": "9"}, "status": {"phase": "Failed"}}),
            json!({"metadata": {"resourceVersion": null}, "status": {}}),
            json!({"metadata": {"resourceVersion": 9}}),
            json!({"metadata": {"labels": {"x": "y"}}, "spec": {"nodeName": "n2"}}),
            json!({"metadata": null}),
            json!({"metadata": "flat"}),
            json!({}),
            json!("not a patch"),
            json!(null),
        ];
        for old in &olds {
            for patch in &patches {
                let mut merged = old.clone();
                merge_patch(&mut merged, patch);
                let expected = prepare_update(kind, old, merged, true).unwrap();
                assert_eq!(
                    patch_status(old, patch),
                    expected,
                    "{old} patched with {patch}"
                );
            }
        }
    }

    /// A ReplicaSet's pod template as its controller sends it: copies are made of it.
    pub(crate) fn replica_template() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "default", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                    "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "bosun/busybox",
                "resources": {"limits": {"memory": "64Mi"}}}]}})
    }

    #[test]
    fn a_copy_of_an_admitted_template_is_what_admitting_it_again_gives() {
        let kind = bosun_api::kinds::by_resource("pods").unwrap();
        let input = replica_template();
        let admitted_once = || {
            let mut obj = input.clone();
            prepare_create(kind, &mut obj).unwrap();
            let prepared = generated_fields(&obj);
            (prepared, admit(kind, obj, None, Vec::new()).unwrap())
        };
        let (prepared, first) = admitted_once();
        let copies = Copies::of(kind, &input, &prepared, &first).expect("pods of a template");
        let copy = copies.copy();
        let without_generated = |obj: &Value| {
            let mut obj = obj.clone();
            for f in ["name", "uid", "creationTimestamp"] {
                obj["metadata"].as_object_mut().unwrap().remove(f);
            }
            obj
        };
        // The same as a second object admitted in full, but for what is generated...
        let (_, second) = admitted_once();
        assert_eq!(without_generated(&copy), without_generated(&second));
        // ...which is new, and in the form the typed pass gives: a copy admitted again
        // is unchanged.
        let [name, uid, created] = generated_fields(&copy);
        let name = name.unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_ne!(uid, prepared[1]);
        assert!(created.is_some());
        // Each copy is a new object: another copy has another name and uid.
        let [name2, uid2, _] = generated_fields(&copies.copy());
        assert_ne!(name2.as_deref(), Some(name.as_str()));
        assert_ne!(uid2, uid);
        assert_eq!(admit(kind, copy.clone(), None, Vec::new()).unwrap(), copy);

        // Not for an object with a name, a Job (its selector holds its uid), or when the
        // typed pass changed a generated field.
        let mut named = input.clone();
        named["metadata"]["name"] = json!("web-1");
        assert!(Copies::of(kind, &named, &prepared, &first).is_none());
        let jobs = bosun_api::kinds::by_resource("jobs").unwrap();
        assert!(Copies::of(jobs, &input, &prepared, &first).is_none());
        let mut changed = prepared.clone();
        changed[2] = Some("2026-01-01T00:00:00.5Z".into());
        assert!(Copies::of(kind, &input, &changed, &first).is_none());
    }
}
