//! From a pod's spec to runtime containers: names, labels, environment, mounts, limits.
//! Pure functions, so they are unit-tested without Docker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bosun_api::admission::parse_quantity;
use k8s_openapi::api::core::v1::{Container as KContainer, EnvVar, Pod};

use crate::runtime::{ContainerSpec, Network};

/// Label: the node whose agent owns the container.
pub const LABEL_NODE: &str = "bosun.io/node";
/// Label: the agent (node name and data directory) that owns the container: two clusters
/// on one Docker host may both have a `worker-1`.
pub const LABEL_AGENT: &str = "bosun.io/agent";
/// Label: the pod's uid.
pub const LABEL_POD_UID: &str = "bosun.io/pod-uid";
/// Label: `namespace/name` of the pod.
pub const LABEL_POD: &str = "bosun.io/pod";
/// Label: the container's name in the pod spec (`POD` for the sandbox).
pub const LABEL_CONTAINER: &str = "bosun.io/container";
/// Label: which attempt at this container (0, then one more per restart).
pub const LABEL_ATTEMPT: &str = "bosun.io/attempt";
/// Label: `sandbox`, `init` or `app`.
pub const LABEL_ROLE: &str = "bosun.io/role";
/// The sandbox's container name label.
pub const SANDBOX: &str = "POD";

/// What a container's place in the pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the pod's network namespace.
    Sandbox,
    /// An init container.
    Init,
    /// A regular container.
    App,
}

impl Role {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Role::Sandbox => "sandbox",
            Role::Init => "init",
            Role::App => "app",
        }
    }
}

/// Who owns a container on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The node's name.
    pub node: String,
    /// Unique per agent on the host ([`agent_id`]).
    pub id: String,
}

/// The owner id of the agent of `node` keeping its state in `root`: stable across
/// restarts (so it adopts its containers), distinct for two agents of one name.
pub fn agent_id(node: &str, root: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .bytes()
        .chain([0])
        .chain(root.to_string_lossy().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Why a container cannot be configured (Kubernetes: `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A referenced ConfigMap or Secret is missing.
    #[error("{kind} {name:?} not found")]
    MissingObject {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A referenced key is missing from a ConfigMap or Secret.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// A volume mount names no volume of the pod.
    #[error("volume mount {0:?} names no volume of the pod")]
    NoSuchVolume(String),
    /// A field this agent does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// The ConfigMaps and Secrets a pod references, read before its containers are made.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// ConfigMap name → data (binaryData decoded too).
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Secret name → data (decoded).
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Facts about the pod and node that the environment can refer to (fieldRef).
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The pod's IP (the sandbox's).
    pub pod_ip: String,
    /// The node's address.
    pub host_ip: String,
}

/// Names of ConfigMaps and Secrets the pod needs: (configmaps, secrets), each with
/// whether the reference is optional.
pub fn references(pod: &Pod) -> (BTreeMap<String, bool>, BTreeMap<String, bool>) {
    let mut cms: BTreeMap<String, bool> = BTreeMap::new();
    let mut secrets: BTreeMap<String, bool> = BTreeMap::new();
    let note = |m: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>| {
        let opt = optional.unwrap_or(false);
        m.entry(name.to_string())
            .and_modify(|o| *o &= opt)
            .or_insert(opt);
    };
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    for c in all_containers(pod) {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    note(&mut cms, &r.name, r.optional);
                }
                if let Some(r) = &from.secret_key_ref {
                    note(&mut secrets, &r.name, r.optional);
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                note(&mut cms, &r.name, r.optional);
            }
            if let Some(r) = &f.secret_ref {
                note(&mut secrets, &r.name, r.optional);
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            note(&mut cms, &cm.name, cm.optional);
        }
        if let Some(s) = &v.secret {
            if let Some(name) = &s.secret_name {
                note(&mut secrets, name, s.optional);
            }
        }
    }
    (cms, secrets)
}

/// Init containers then containers.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &KContainer> {
    pod.spec.iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// `namespace`, `name`, `uid` of a pod.
pub fn identity(pod: &Pod) -> (&str, &str, &str) {
    let m = &pod.metadata;
    (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or(""),
    )
}

/// The runtime name of a pod's container: unique on the host (the uid is), readable in
/// `docker ps`, as dockershim named them.
pub fn container_name(pod: &Pod, container: &str, attempt: u32) -> String {
    let (ns, name, uid) = identity(pod);
    format!("k8s_{container}_{name}_{ns}_{uid}_{attempt}")
}

/// The labels of one of a pod's containers.
pub fn labels(
    agent: &Agent,
    pod: &Pod,
    container: &str,
    role: Role,
    attempt: u32,
) -> BTreeMap<String, String> {
    let (ns, name, uid) = identity(pod);
    BTreeMap::from([
        (LABEL_NODE.to_string(), agent.node.clone()),
        (LABEL_AGENT.to_string(), agent.id.clone()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
        (LABEL_POD.to_string(), format!("{ns}/{name}")),
        (LABEL_CONTAINER.to_string(), container.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        (LABEL_ROLE.to_string(), role.label().to_string()),
    ])
}

/// Where the agent keeps a pod's volumes on the host.
pub fn volume_dir(root: &Path, uid: &str, volume: &str) -> PathBuf {
    root.join("pods").join(uid).join("volumes").join(volume)
}

/// The sandbox container: the network namespace every container of the pod joins, with
/// the pod's hostname; it only waits for SIGTERM.
pub fn sandbox_spec(
    agent: &Agent,
    pod: &Pod,
    image: &str,
    network: &str,
    attempt: u32,
) -> ContainerSpec {
    let (_, name, _) = identity(pod);
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| name.chars().take(63).collect());
    ContainerSpec {
        name: container_name(pod, SANDBOX, attempt),
        image: image.to_string(),
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
        ]),
        cmd: None,
        labels: labels(agent, pod, SANDBOX, Role::Sandbox, attempt),
        network: Network::Bridge(network.to_string()),
        hostname: Some(hostname),
        ..Default::default()
    }
}

/// One of the pod's containers, joined to the sandbox `sandbox_id`.
///
/// # Errors
/// A [`ConfigError`] when a reference cannot be resolved.
#[allow(clippy::too_many_arguments)]
pub fn container_spec(
    agent: &Agent,
    pod: &Pod,
    c: &KContainer,
    role: Role,
    attempt: u32,
    sandbox_id: &str,
    refs: &Refs,
    facts: &PodFacts,
    root: &Path,
) -> Result<ContainerSpec, ConfigError> {
    let (limits_mem, limits_cpu, requests_cpu) = resources(c);
    Ok(ContainerSpec {
        name: container_name(pod, &c.name, attempt),
        image: c.image.clone().unwrap_or_default(),
        entrypoint: c.command.clone(),
        // With a command and no args, the image's CMD must not be appended.
        cmd: match (&c.command, &c.args) {
            (_, Some(a)) => Some(a.clone()),
            (Some(_), None) => Some(Vec::new()),
            (None, None) => None,
        },
        env: env(pod, c, refs, facts)?,
        working_dir: c.working_dir.clone(),
        labels: labels(agent, pod, &c.name, role, attempt),
        binds: binds(pod, c, root)?,
        network: Network::Join(sandbox_id.to_string()),
        hostname: None,
        memory: limits_mem,
        nano_cpus: limits_cpu,
        cpu_shares: requests_cpu,
        tty: c.tty.unwrap_or(false),
        stdin: c.stdin.unwrap_or(false),
        ..Default::default()
    })
}

/// The resources a pod's QoS class depends on, in the order of [`Asks`]' arrays.
pub const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// One container's requests and limits of [`QOS_RESOURCES`], as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asks<'a> {
    pub requests: [Option<&'a str>; 2],
    pub limits: [Option<&'a str>; 2],
}

impl<'a> Asks<'a> {
    /// `get(map, resource)` reads one quantity of `requests` or `limits`.
    pub fn read<M>(
        requests: Option<&'a M>,
        limits: Option<&'a M>,
        get: impl Fn(&'a M, &str) -> Option<&'a str>,
    ) -> Self {
        let mut asks = Asks::default();
        for (i, r) in QOS_RESOURCES.iter().enumerate() {
            asks.requests[i] = requests.and_then(|m| get(m, r));
            asks.limits[i] = limits.and_then(|m| get(m, r));
        }
        asks
    }
}

/// Kubernetes' QoS class of a pod whose containers (init containers included) ask for
/// `containers`: BestEffort when none requests or limits cpu or memory; Guaranteed when
/// every one limits both and requests what it limits (a missing request is its limit),
/// quantities compared by value (`1` and `1000m` are one cpu); Burstable otherwise.
pub fn qos_class<'a>(containers: impl IntoIterator<Item = Asks<'a>>) -> &'static str {
    let same = |a: &str, b: &str| match (parse_quantity(a), parse_quantity(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        for i in 0..QOS_RESOURCES.len() {
            let (req, lim) = (c.requests[i], c.limits[i]);
            any |= req.is_some() || lim.is_some();
            match (req.or(lim), lim) {
                (Some(q), Some(l)) if same(q, l) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// [`qos_class`] of `pod`, from all its containers ([`all_containers`]).
pub fn pod_qos_class(pod: &Pod) -> &'static str {
    qos_class(all_containers(pod).map(|c| {
        let r = c.resources.as_ref();
        Asks::read(
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
            |m, k| m.get(k).map(|q| q.0.as_str()),
        )
    }))
}

/// (memory limit bytes, cpu limit in nano-cpus, cpu shares from the request).
fn resources(c: &KContainer) -> (Option<i64>, Option<i64>, Option<i64>) {
    let Some(r) = &c.resources else {
        return (None, None, None);
    };
    let milli =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.and_then(|m| m.get(k))
                .and_then(|q| parse_quantity(&q.0).ok())
        };
    let mem =
        milli(r.limits.as_ref(), "memory").map(|m| i64::try_from(m / 1000).unwrap_or(i64::MAX));
    let cpu =
        milli(r.limits.as_ref(), "cpu").map(|m| i64::try_from(m * 1_000_000).unwrap_or(i64::MAX));
    let req_cpu = milli(r.requests.as_ref(), "cpu")
        .or_else(|| milli(r.limits.as_ref(), "cpu"))
        // Docker's minimum weight is 2, as the kubelet maps it.
        .map(|m| i64::try_from((m * 1024 / 1000).max(2)).unwrap_or(i64::MAX));
    (mem, cpu, req_cpu)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Expands `$(VAR)` references to earlier variables, as Kubernetes does; `$$` escapes.
fn expand(value: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn env(
    pod: &Pod,
    c: &KContainer,
    refs: &Refs,
    facts: &PodFacts,
) -> Result<Vec<String>, ConfigError> {
    let (ns, _, _) = identity(pod);
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let sources = [
            f.config_map_ref
                .as_ref()
                .map(|r| ("configmap", &refs.config_maps, &r.name, r.optional)),
            f.secret_ref
                .as_ref()
                .map(|r| ("secret", &refs.secrets, &r.name, r.optional)),
        ];
        for (kind, store, name, optional) in sources.into_iter().flatten() {
            match store.get(name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut vars, format!("{prefix}{k}"), text(v));
                    }
                }
                None if optional.unwrap_or(false) => {}
                None => {
                    return Err(ConfigError::MissingObject {
                        kind,
                        name: name.clone(),
                    })
                }
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(ns, pod, e, refs, facts, &vars)? {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.get(&k).cloned().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect())
}

fn env_value(
    ns: &str,
    pod: &Pod,
    e: &EnvVar,
    refs: &Refs,
    facts: &PodFacts,
    earlier: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &e.value_from else {
        return Ok(Some(expand(e.value.as_deref().unwrap_or(""), earlier)));
    };
    let lookup = |kind: &'static str,
                  store: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
                  name: &str,
                  key: &str,
                  optional: bool|
     -> Result<Option<String>, ConfigError> {
        match store.get(name) {
            None if optional => Ok(None),
            None => Err(ConfigError::MissingObject {
                kind: if kind == "ConfigMap" {
                    "configmap"
                } else {
                    "secret"
                },
                name: name.to_string(),
            }),
            Some(data) => match data.get(key) {
                Some(v) => Ok(Some(text(v))),
                None if optional => Ok(None),
                None => Err(ConfigError::MissingKey {
                    kind,
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    key: key.to_string(),
                }),
            },
        }
    };
    if let Some(r) = &from.config_map_key_ref {
        return lookup(
            "ConfigMap",
            &refs.config_maps,
            &r.name,
            &r.key,
            r.optional.unwrap_or(false),
        );
    }
    if let Some(r) = &from.secret_key_ref {
        return lookup(
            "Secret",
            &refs.secrets,
            &r.name,
            &r.key,
            r.optional.unwrap_or(false),
        );
    }
    if let Some(f) = &from.field_ref {
        let m = &pod.metadata;
        let spec = pod.spec.as_ref();
        let v = match f.field_path.as_str() {
            "metadata.name" => m.name.clone().unwrap_or_default(),
            "metadata.namespace" => ns.to_string(),
            "metadata.uid" => m.uid.clone().unwrap_or_default(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" => facts.pod_ip.clone(),
            "status.hostIP" => facts.host_ip.clone(),
            p => {
                if let Some(key) = p
                    .strip_prefix("metadata.labels['")
                    .and_then(|k| k.strip_suffix("']"))
                {
                    m.labels
                        .as_ref()
                        .and_then(|l| l.get(key).cloned())
                        .unwrap_or_default()
                } else if let Some(key) = p
                    .strip_prefix("metadata.annotations['")
                    .and_then(|k| k.strip_suffix("']"))
                {
                    m.annotations
                        .as_ref()
                        .and_then(|l| l.get(key).cloned())
                        .unwrap_or_default()
                } else {
                    return Err(ConfigError::Unsupported(format!(
                        "env {}: fieldRef {p:?}",
                        e.name
                    )));
                }
            }
        };
        return Ok(Some(v));
    }
    if from.resource_field_ref.is_some() {
        return Err(ConfigError::Unsupported(format!(
            "env {}: resourceFieldRef",
            e.name
        )));
    }
    Ok(None)
}

/// Bind mounts for a container's volumeMounts: emptyDir, configMap and secret volumes
/// live under the agent's directory; hostPath binds the host path.
fn binds(pod: &Pod, c: &KContainer, root: &Path) -> Result<Vec<String>, ConfigError> {
    let (_, _, uid) = identity(pod);
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .and_then(|vs| vs.iter().find(|v| v.name == m.name))
            .ok_or_else(|| ConfigError::NoSuchVolume(m.name.clone()))?;
        let mut host = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if v.empty_dir.is_some() || v.config_map.is_some() || v.secret.is_some() {
            volume_dir(root, uid, &v.name)
        } else {
            return Err(ConfigError::Unsupported(format!(
                "volume {:?}: only emptyDir, hostPath, configMap and secret volumes",
                v.name
            )));
        };
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(ConfigError::Unsupported(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                )));
            }
            host = host.join(sub);
        }
        let ro = m.read_only.unwrap_or(false) || v.config_map.is_some() || v.secret.is_some();
        let mut b = format!("{}:{}", host.display(), m.mount_path);
        if ro {
            b.push_str(":ro");
        }
        out.push(b);
    }
    Ok(out)
}

/// The files of a configMap or secret volume: (relative path, bytes, mode).
///
/// # Errors
/// When a key listed in `items` is missing and the volume is not optional.
pub fn projected_files(
    pod: &Pod,
    volume: &k8s_openapi::api::core::v1::Volume,
    refs: &Refs,
) -> Result<Vec<(String, Vec<u8>, u32)>, ConfigError> {
    let (ns, _, _) = identity(pod);
    let (kind, name, data, items, default_mode, optional) = if let Some(cm) = &volume.config_map {
        (
            "ConfigMap",
            cm.name.clone(),
            refs.config_maps.get(&cm.name),
            cm.items.as_ref(),
            cm.default_mode,
            cm.optional.unwrap_or(false),
        )
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        (
            "Secret",
            name.clone(),
            refs.secrets.get(&name),
            s.items.as_ref(),
            s.default_mode,
            s.optional.unwrap_or(false),
        )
    } else {
        return Ok(Vec::new());
    };
    let mode = |m: Option<i32>| u32::try_from(m.or(default_mode).unwrap_or(0o644)).unwrap_or(0o644);
    let Some(data) = data else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(ConfigError::MissingObject {
            kind: if kind == "ConfigMap" {
                "configmap"
            } else {
                "secret"
            },
            name,
        });
    };
    let mut files = Vec::new();
    match items {
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => files.push((it.path.clone(), v.clone(), mode(it.mode))),
                    None if optional => {}
                    None => {
                        return Err(ConfigError::MissingKey {
                            kind,
                            namespace: ns.to_string(),
                            name,
                            key: it.key.clone(),
                        })
                    }
                }
            }
        }
        None => {
            for (k, v) in data {
                files.push((k.clone(), v.clone(), mode(None)));
            }
        }
    }
    for (p, _, _) in &files {
        if p.starts_with('/') || p.split('/').any(|s| s == "..") {
            return Err(ConfigError::Unsupported(format!(
                "volume {:?}: item path {p:?} must be relative, without '..'",
                volume.name
            )));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qos_classes_as_kubernetes_names_them_with_quantities_compared_by_value() {
        let asks = |req: [Option<&'static str>; 2], lim: [Option<&'static str>; 2]| Asks {
            requests: req,
            limits: lim,
        };
        let none = asks([None, None], [None, None]);
        assert_eq!(qos_class([]), "BestEffort");
        assert_eq!(qos_class([none, none]), "BestEffort");
        let both = asks([Some("1"), Some("1Gi")], [Some("1000m"), Some("1024Mi")]);
        assert_eq!(qos_class([both]), "Guaranteed");
        // Requests default to limits.
        assert_eq!(
            qos_class([asks([None, None], [Some("500m"), Some("64Mi")])]),
            "Guaranteed"
        );
        assert_eq!(qos_class([both, none]), "Burstable");
        assert_eq!(
            qos_class([asks([Some("100m"), None], [None, None])]),
            "Burstable"
        );
        assert_eq!(
            qos_class([asks(
                [Some("100m"), Some("64Mi")],
                [Some("200m"), Some("64Mi")]
            )]),
            "Burstable"
        );
        // Only cpu limited: memory is not.
        assert_eq!(
            qos_class([asks([None, None], [Some("1"), None])]),
            "Burstable"
        );
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "web", "uid": "u-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn refs() -> Refs {
        let mut r = Refs::default();
        r.config_maps.insert(
            "cfg".into(),
            BTreeMap::from([
                ("mode".into(), b"fast".to_vec()),
                ("level".into(), b"3".to_vec()),
            ]),
        );
        r.secrets.insert(
            "creds".into(),
            BTreeMap::from([("password".into(), b"s3cret".to_vec())]),
        );
        r
    }

    fn spec_of(p: &Pod, refs: &Refs) -> Result<ContainerSpec, ConfigError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        let facts = PodFacts {
            pod_ip: "172.18.0.5".into(),
            host_ip: "127.0.0.21".into(),
        };
        let agent = Agent {
            node: "w1".into(),
            id: agent_id("w1", Path::new("/var/lib/agent")),
        };
        container_spec(
            &agent,
            p,
            c,
            Role::App,
            2,
            "sbx",
            refs,
            &facts,
            Path::new("/var/lib/agent"),
        )
    }

    #[test]
    fn environment_resolves_values_references_and_fields_in_order() {
        let p = pod(
            json!({"containers": [{"name": "web", "image": "bosun/busybox",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "$(A)-$$(A)-$(NOPE)"},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "GONE", "valueFrom": {"configMapKeyRef": {"name": "other", "key": "x", "optional": true}}}
            ]}]}),
        );
        let s = spec_of(&p, &refs()).unwrap();
        assert_eq!(
            s.env,
            vec![
                "CFG_level=3",
                "CFG_mode=fast",
                "A=1",
                "B=1-$(A)-$(NOPE)",
                "MODE=fast",
                "PW=s3cret",
                "POD=web-1",
                "NS=web",
                "IP=172.18.0.5",
                "APP=web"
            ]
        );
        assert_eq!(s.name, "k8s_web_web-1_web_u-1_2");
        assert_eq!(s.labels[LABEL_POD_UID], "u-1");
        assert_eq!(s.labels[LABEL_ATTEMPT], "2");
        assert_eq!(s.network, Network::Join("sbx".into()));
    }

    #[test]
    fn a_missing_reference_names_the_object_or_key() {
        let p = pod(json!({"containers": [{"name": "web", "image": "i",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}]}));
        assert_eq!(
            spec_of(&p, &refs()).unwrap_err().to_string(),
            "secret \"nope\" not found"
        );
        let p = pod(json!({"containers": [{"name": "web", "image": "i",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}]}));
        assert_eq!(
            spec_of(&p, &refs()).unwrap_err().to_string(),
            "couldn't find key k in ConfigMap web/cfg"
        );
    }

    #[test]
    fn command_args_limits_and_mounts_map_to_docker() {
        let p = pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "host", "hostPath": {"path": "/srv"}}],
            "containers": [{"name": "web", "image": "i", "command": ["/bin/sh", "-c"],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"},
                             {"name": "host", "mountPath": "/srv", "readOnly": true, "subPath": "x"}]}]}));
        let s = spec_of(&p, &refs()).unwrap();
        assert_eq!(
            s.entrypoint,
            Some(vec!["/bin/sh".to_string(), "-c".to_string()])
        );
        assert_eq!(s.cmd, Some(vec![]));
        assert_eq!(s.memory, Some(64 * 1024 * 1024));
        assert_eq!(s.nano_cpus, Some(500_000_000));
        assert_eq!(s.cpu_shares, Some(256));
        assert_eq!(
            s.binds,
            vec![
                "/var/lib/agent/pods/u-1/volumes/data:/data",
                "/var/lib/agent/pods/u-1/volumes/cfg:/etc/cfg:ro",
                "/srv/x:/srv:ro"
            ]
        );
        let p = pod(json!({"containers": [{"name": "web", "image": "i",
            "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}));
        assert_eq!(
            spec_of(&p, &refs()).unwrap_err(),
            ConfigError::NoSuchVolume("nope".into())
        );
    }

    #[test]
    fn configmap_volume_items_and_modes_become_files() {
        let p = pod(
            json!({"volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o600,
            "items": [{"key": "mode", "path": "conf/mode"}]}}], "containers": [{"name": "c", "image": "i"}]}),
        );
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert_eq!(
            projected_files(&p, v, &refs()).unwrap(),
            vec![("conf/mode".to_string(), b"fast".to_vec(), 0o600)]
        );
        let p = pod(
            json!({"volumes": [{"name": "s", "secret": {"secretName": "creds",
            "items": [{"key": "password", "path": "../escape"}]}}], "containers": [{"name": "c", "image": "i"}]}),
        );
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert!(projected_files(&p, v, &refs()).is_err());
    }

    #[test]
    fn agent_ids_differ_by_name_and_directory_and_are_stable() {
        let a = agent_id("worker-1", Path::new("/a"));
        assert_eq!(a, agent_id("worker-1", Path::new("/a")));
        assert_ne!(a, agent_id("worker-1", Path::new("/b")));
        assert_ne!(a, agent_id("worker-2", Path::new("/a")));
    }

    #[test]
    fn references_lists_every_configmap_and_secret_once() {
        let p = pod(
            json!({"volumes": [{"name": "s", "secret": {"secretName": "creds"}}],
            "containers": [{"name": "c", "image": "i",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": true}}}],
            "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}),
        );
        let (cms, secrets) = references(&p);
        assert_eq!(cms, BTreeMap::from([("cfg".to_string(), false)]));
        assert_eq!(secrets, BTreeMap::from([("creds".to_string(), false)]));
    }
}
