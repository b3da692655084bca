//! Pods and pod specs (also the pod templates of workloads).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, HTTPGetAction, LifecycleHandler, NodeSelectorTerm, Pod,
    PodAffinityTerm, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{validate_label_selector, validate_labels, validate_labels_and_annotations};
use super::names::{
    config_key_errors, dns1123_label_errors, dns1123_subdomain_errors, env_var_name_errors,
    port_name_errors, qualified_name_errors,
};
use super::{
    dns1123_subdomain, parse_quantity, validate_object_meta, Admit, FieldError, NON_NEGATIVE,
};

pub(crate) const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
pub(crate) const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const MESSAGE_POLICIES: [&str; 2] = ["File", "FallbackToLogsOnError"];
pub(crate) const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
const NODE_SELECTOR_OPERATORS: [&str; 6] = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];
const FIELD_PATHS: [&str; 11] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
/// Default permission bits of projected files (0644).
const DEFAULT_MODE: i32 = 0o644;

// ---------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------

/// Kubernetes' defaults of a pod spec (`SetDefaults_PodSpec` and the per-field ones below).
pub(crate) fn default_pod_spec(spec: &mut PodSpec) {
    set_if_none(&mut spec.restart_policy, "Always");
    set_if_none(&mut spec.dns_policy, "ClusterFirst");
    spec.termination_grace_period_seconds.get_or_insert(30);
    set_if_none(&mut spec.scheduler_name, "default-scheduler");
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network == Some(true);
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
}

fn set_if_none(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy = if image_has_pinned_tag(c.image.as_deref().unwrap_or("")) {
            "IfNotPresent"
        } else {
            "Always"
        };
        c.image_pull_policy = Some(policy.to_string());
    }
    set_if_none(&mut c.termination_message_path, "/dev/termination-log");
    set_if_none(&mut c.termination_message_policy, "File");
    for p in c.ports.iter_mut().flatten() {
        set_if_none(&mut p.protocol, "TCP");
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = &mut c.lifecycle {
        for h in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
            .into_iter()
            .flatten()
        {
            if let Some(get) = &mut h.http_get {
                default_http_get(get);
            }
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_if_none(&mut field_ref.api_version, "v1");
        }
    }
}

/// True when the image names a tag other than `latest`, or a digest.
fn image_has_pinned_tag(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => !tag.is_empty() && tag != "latest",
        None => false,
    }
}

fn default_probe(p: &mut Probe) {
    // Kubernetes treats 0 as unset here (Go zero values).
    for (field, value) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(value);
        }
    }
    if let Some(get) = &mut p.http_get {
        default_http_get(get);
    }
}

fn default_http_get(get: &mut HTTPGetAction) {
    set_if_none(&mut get.path, "/");
    set_if_none(&mut get.scheme, "HTTP");
}

fn default_volume(v: &mut Volume) {
    if let Some(s) = &mut v.config_map {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = &mut v.secret {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = &mut v.downward_api {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = &mut v.projected {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
}

/// Pod-only default: a resource with a limit and no request requests its limit.
fn default_requests_from_limits(c: &mut Container) {
    let Some(resources) = &mut c.resources else {
        return;
    };
    let Some(limits) = &resources.limits else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    for (name, q) in limits {
        requests.entry(name.clone()).or_insert_with(|| q.clone());
    }
}

impl Admit for Pod {
    fn default_fields(&mut self) {
        if let Some(spec) = &mut self.spec {
            default_pod_spec(spec);
            for c in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                default_requests_from_limits(c);
            }
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        match &self.spec {
            Some(spec) => errs.extend(validate_pod_spec(spec, "spec")),
            None => errs.push(FieldError::required("spec.containers", "")),
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = super::validate_meta_update(&self.metadata, &old.metadata);
        let empty = PodSpec::default();
        let new_spec = self.spec.as_ref().unwrap_or(&empty);
        let old_spec = old.spec.as_ref().unwrap_or(&empty);
        errs.extend(validate_pod_spec_update(new_spec, old_spec));
        errs
    }
}

/// What `spec` may change on a pod update, as Kubernetes says it.
const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds`";

fn validate_pod_spec_update(new: &PodSpec, old: &PodSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let old_node = old.node_name.as_deref().unwrap_or("");
    let new_node = new.node_name.as_deref().unwrap_or("");
    if old_node != new_node {
        if old_node.is_empty() {
            errs.push(FieldError::forbidden(
                "spec.nodeName",
                "may only be set by binding the pod to a node",
            ));
        } else {
            errs.push(FieldError::immutable("spec.nodeName", new_node));
        }
    }
    match (old.active_deadline_seconds, new.active_deadline_seconds) {
        (Some(_), None) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            "",
            "must not update from a positive integer to nil value",
        )),
        (Some(o), Some(n)) if n > o => errs.push(FieldError::invalid_number(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
    let new_tolerations = new.tolerations.as_deref().unwrap_or_default();
    for (i, t) in old.tolerations.iter().flatten().enumerate() {
        let kept = new_tolerations.iter().any(|n| {
            n.key == t.key && n.operator == t.operator && n.value == t.value && n.effect == t.effect
        });
        if !kept {
            errs.push(FieldError::forbidden(
                format!("spec.tolerations[{i}]"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
        }
    }
    // Everything else must be as it was: take the new spec, put back the old values of the
    // mutable fields, and compare.
    let mut rest = new.clone();
    rest.node_name = old.node_name.clone();
    rest.active_deadline_seconds = old.active_deadline_seconds;
    rest.tolerations = old.tolerations.clone();
    rest.termination_grace_period_seconds = old.termination_grace_period_seconds;
    if rest.containers.len() == old.containers.len() {
        for (n, o) in rest.containers.iter_mut().zip(&old.containers) {
            n.image = o.image.clone();
        }
    }
    if let (Some(new_init), Some(old_init)) = (&mut rest.init_containers, &old.init_containers) {
        if new_init.len() == old_init.len() {
            for (n, o) in new_init.iter_mut().zip(old_init) {
                n.image = o.image.clone();
            }
        }
    }
    if rest != *old {
        errs.push(FieldError::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
    errs
}

/// Checks that `pod` may be bound to `node_name` (the binding subresource): the pod is
/// not bound yet nor being deleted, and the node name is a DNS-1123 subdomain. Binding sets
/// `spec.nodeName` without going through [`Admit::validate_update`], which refuses it.
pub fn validate_pod_binding(pod: &Pod, node_name: &str) -> Vec<FieldError> {
    validate_binding(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        pod.metadata.deletion_timestamp.is_some(),
        node_name,
    )
}

/// [`validate_pod_binding`] on the two facts of the pod it reads: the node it is bound to
/// (`spec.nodeName`) and whether it is being deleted. The API server's binding path reads
/// them from the stored JSON, without decoding the whole pod.
pub fn validate_binding(bound: Option<&str>, deleting: bool, node_name: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if node_name.is_empty() {
        errs.push(FieldError::required("target.name", ""));
    } else {
        for msg in dns1123_subdomain_errors(node_name) {
            errs.push(FieldError::invalid("target.name", node_name, msg));
        }
    }
    if let Some(bound) = bound.filter(|n| !n.is_empty()) {
        errs.push(FieldError::forbidden(
            "spec.nodeName",
            format!("pod is already assigned to node {bound:?}"),
        ));
    }
    if deleting {
        errs.push(FieldError::forbidden(
            "metadata.deletionTimestamp",
            "pod is being deleted, cannot be assigned to a host",
        ));
    }
    errs
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Validates a pod template (labels, annotations, spec) at `path` (e.g. `spec.template`).
pub(crate) fn validate_pod_template(template: &PodTemplateSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(meta) = &template.metadata {
        errs.extend(validate_labels_and_annotations(
            meta,
            &format!("{path}.metadata"),
        ));
    }
    match &template.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, &format!("{path}.spec"))),
        None => errs.push(FieldError::required(format!("{path}.spec.containers"), "")),
    }
    errs
}

/// Validates a pod spec; `path` is where it sits (`spec`, `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let host_network = spec.host_network == Some(true);

    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), path, &mut errs);

    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let p = format!("{path}.initContainers[{i}]");
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{p}.name"), &c.name));
        }
        validate_container(c, &p, &volumes, host_network, true, &mut errs);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{p}.name"), &c.name));
        }
        validate_container(c, &p, &volumes, host_network, false, &mut errs);
    }

    if let Some(policy) = &spec.restart_policy {
        if !RESTART_POLICIES.contains(&policy.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &RESTART_POLICIES,
            ));
        }
    }
    if let Some(policy) = &spec.dns_policy {
        if !DNS_POLICIES.contains(&policy.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{path}.dnsPolicy"),
                policy,
                &DNS_POLICIES,
            ));
        } else if policy == "None" && spec.dns_config.is_none() {
            errs.push(FieldError::required(
                format!("{path}.dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
        }
    }
    if let Some(dns) = &spec.dns_config {
        for (i, ns) in dns.nameservers.iter().flatten().enumerate() {
            if let Err(msg) = super::ip_address(ns) {
                errs.push(FieldError::invalid(
                    format!("{path}.dnsConfig.nameservers[{i}]"),
                    ns,
                    msg,
                ));
            }
        }
    }
    if let Some(t) = spec.termination_grace_period_seconds {
        if t < 0 {
            errs.push(FieldError::invalid_number(
                format!("{path}.terminationGracePeriodSeconds"),
                t,
                NON_NEGATIVE,
            ));
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&d) {
            errs.push(FieldError::invalid_number(
                format!("{path}.activeDeadlineSeconds"),
                d,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(sel) = &spec.node_selector {
        errs.extend(validate_labels(sel, &format!("{path}.nodeSelector")));
    }
    type NameCheck = fn(&str) -> Vec<String>;
    let optional_names: [(&Option<String>, &str, NameCheck); 5] = [
        (&spec.node_name, "nodeName", dns1123_subdomain_errors),
        (&spec.hostname, "hostname", dns1123_label_errors),
        (&spec.subdomain, "subdomain", dns1123_label_errors),
        (
            &spec.service_account_name,
            "serviceAccountName",
            dns1123_subdomain_errors,
        ),
        (
            &spec.scheduler_name,
            "schedulerName",
            dns1123_subdomain_errors,
        ),
    ];
    for (value, field, check) in optional_names {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in check(v) {
                errs.push(FieldError::invalid(format!("{path}.{field}"), v, msg));
            }
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        validate_toleration(t, &format!("{path}.tolerations[{i}]"), &mut errs);
    }
    if let Some(affinity) = &spec.affinity {
        validate_affinity(affinity, &format!("{path}.affinity"), &mut errs);
    }
    if let Some(resources) = &spec.resources {
        validate_resources(resources, &format!("{path}.resources"), &mut errs);
    }
    errs
}

/// Validates the volumes and returns their names (for volume mounts).
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &str,
    errs: &mut Vec<FieldError>,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            for msg in dns1123_label_errors(&v.name) {
                errs.push(FieldError::invalid(format!("{p}.name"), &v.name, msg));
            }
            if !names.insert(v.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), &v.name));
            }
        }
        validate_volume_source(v, &p, errs);
    }
    names
}

fn validate_volume_source(v: &Volume, p: &str, errs: &mut Vec<FieldError>) {
    let supported = [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("projected", v.projected.is_some()),
    ];
    let unsupported = [
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("flocker", v.flocker.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("nfs", v.nfs.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("rbd", v.rbd.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
    ];
    let present: Vec<&str> = supported
        .iter()
        .chain(unsupported.iter())
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if present.is_empty() {
        errs.push(FieldError::required(p, "must specify a volume type"));
    }
    for extra in present.iter().skip(1) {
        errs.push(FieldError::forbidden(
            format!("{p}.{extra}"),
            "may not specify more than 1 volume type",
        ));
    }
    for (name, _) in unsupported.iter().filter(|(_, set)| *set) {
        errs.push(FieldError::forbidden(
            format!("{p}.{name}"),
            format!("volume type {name} is not supported by bosun (supported: emptyDir, hostPath, configMap, secret, persistentVolumeClaim, downwardAPI, projected)"),
        ));
    }

    if let Some(s) = &v.empty_dir {
        if let Some(q) = &s.size_limit {
            validate_quantity(q, &format!("{p}.emptyDir.sizeLimit"), errs);
        }
    }
    if let Some(s) = &v.host_path {
        let hp = format!("{p}.hostPath");
        if s.path.is_empty() {
            errs.push(FieldError::required(format!("{hp}.path"), ""));
        } else if s.path.split('/').any(|c| c == "..") {
            errs.push(FieldError::invalid(
                format!("{hp}.path"),
                &s.path,
                "must not contain '..'",
            ));
        }
        if let Some(t) = &s.type_ {
            if !HOST_PATH_TYPES.contains(&t.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{hp}.type"),
                    t,
                    &HOST_PATH_TYPES,
                ));
            }
        }
    }
    if let Some(s) = &v.config_map {
        let cp = format!("{p}.configMap");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{cp}.name"), ""));
        }
        validate_mode(s.default_mode, &format!("{cp}.defaultMode"), errs);
        for (i, item) in s.items.iter().flatten().enumerate() {
            validate_key_to_path(
                &item.key,
                &item.path,
                item.mode,
                &format!("{cp}.items[{i}]"),
                errs,
            );
        }
    }
    if let Some(s) = &v.secret {
        let sp = format!("{p}.secret");
        if s.secret_name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{sp}.secretName"), ""));
        }
        validate_mode(s.default_mode, &format!("{sp}.defaultMode"), errs);
        for (i, item) in s.items.iter().flatten().enumerate() {
            validate_key_to_path(
                &item.key,
                &item.path,
                item.mode,
                &format!("{sp}.items[{i}]"),
                errs,
            );
        }
    }
    if let Some(s) = &v.persistent_volume_claim {
        if s.claim_name.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.persistentVolumeClaim.claimName"),
                "",
            ));
        }
    }
    if let Some(s) = &v.downward_api {
        validate_mode(
            s.default_mode,
            &format!("{p}.downwardAPI.defaultMode"),
            errs,
        );
        for (i, item) in s.items.iter().flatten().enumerate() {
            validate_relative_path(
                &item.path,
                &format!("{p}.downwardAPI.items[{i}].path"),
                errs,
            );
        }
    }
    if let Some(s) = &v.projected {
        validate_mode(s.default_mode, &format!("{p}.projected.defaultMode"), errs);
    }
}

fn validate_mode(mode: Option<i32>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            errs.push(FieldError::invalid_number(
                path,
                i64::from(m),
                "must be a number between 0 and 0777 (octal), both inclusive",
            ));
        }
    }
}

fn validate_key_to_path(
    key: &str,
    rel_path: &str,
    mode: Option<i32>,
    p: &str,
    errs: &mut Vec<FieldError>,
) {
    if key.is_empty() {
        errs.push(FieldError::required(format!("{p}.key"), ""));
    }
    validate_relative_path(rel_path, &format!("{p}.path"), errs);
    validate_mode(mode, &format!("{p}.mode"), errs);
}

fn validate_relative_path(rel: &str, p: &str, errs: &mut Vec<FieldError>) {
    if rel.is_empty() {
        errs.push(FieldError::required(p, ""));
    } else if rel.starts_with('/') {
        errs.push(FieldError::invalid(p, rel, "must be a relative path"));
    } else if rel.split('/').any(|c| c == "..") {
        errs.push(FieldError::invalid(p, rel, "must not contain '..'"));
    }
}

fn validate_container(
    c: &Container,
    p: &str,
    volumes: &BTreeSet<&str>,
    host_network: bool,
    init: bool,
    errs: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{p}.name"), ""));
    } else {
        for msg in dns1123_label_errors(&c.name) {
            errs.push(FieldError::invalid(format!("{p}.name"), &c.name, msg));
        }
    }
    let image = c.image.as_deref().unwrap_or("");
    if image.trim().is_empty() {
        errs.push(FieldError::required(format!("{p}.image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            format!("{p}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    check_enum(
        &c.image_pull_policy,
        &format!("{p}.imagePullPolicy"),
        &PULL_POLICIES,
        errs,
    );
    check_enum(
        &c.termination_message_policy,
        &format!("{p}.terminationMessagePolicy"),
        &MESSAGE_POLICIES,
        errs,
    );
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    if let Some(policy) = &c.restart_policy {
        if !init {
            errs.push(FieldError::forbidden(
                format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        } else if policy != "Always" {
            errs.push(FieldError::not_supported(
                format!("{p}.restartPolicy"),
                policy,
                &["Always"],
            ));
        }
    }

    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        if port.container_port == 0 {
            errs.push(FieldError::required(format!("{pp}.containerPort"), ""));
        } else if !(1..=65535).contains(&port.container_port) {
            errs.push(FieldError::invalid_number(
                format!("{pp}.containerPort"),
                i64::from(port.container_port),
                PORT_RANGE,
            ));
        }
        if let Some(h) = port.host_port.filter(|h| *h != 0) {
            if !(1..=65535).contains(&h) {
                errs.push(FieldError::invalid_number(
                    format!("{pp}.hostPort"),
                    i64::from(h),
                    PORT_RANGE,
                ));
            } else if host_network && h != port.container_port {
                errs.push(FieldError::invalid_number(
                    format!("{pp}.hostPort"),
                    i64::from(h),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        check_enum(&port.protocol, &format!("{pp}.protocol"), &PROTOCOLS, errs);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            for msg in port_name_errors(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), name, msg));
            }
            if !port_names.insert(name) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
        }
    }

    for (i, env) in c.env.iter().flatten().enumerate() {
        validate_env(env, &format!("{p}.env[{i}]"), errs);
    }
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let ep = format!("{p}.envFrom[{i}]");
        match (&from.config_map_ref, &from.secret_ref) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &ep,
                "",
                "may not have more than one field specified at a time",
            )),
            (None, None) => errs.push(FieldError::invalid(
                &ep,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            (Some(r), None) if r.name.is_empty() => {
                errs.push(FieldError::required(format!("{ep}.configMapRef.name"), ""));
            }
            (None, Some(r)) if r.name.is_empty() => {
                errs.push(FieldError::required(format!("{ep}.secretRef.name"), ""));
            }
            _ => {}
        }
    }
    if let Some(resources) = &c.resources {
        validate_resources(resources, &format!("{p}.resources"), errs);
    }

    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        validate_volume_mount(
            m,
            &format!("{p}.volumeMounts[{i}]"),
            volumes,
            &mut mount_paths,
            errs,
        );
    }

    let probes = [
        (&c.liveness_probe, "livenessProbe"),
        (&c.readiness_probe, "readinessProbe"),
        (&c.startup_probe, "startupProbe"),
    ];
    for (probe, field) in probes {
        let Some(probe) = probe else { continue };
        let pp = format!("{p}.{field}");
        if init && !sidecar {
            errs.push(FieldError::forbidden(
                pp,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        validate_probe(probe, &pp, field, errs);
    }
    if let Some(lifecycle) = &c.lifecycle {
        let lp = format!("{p}.lifecycle");
        if init && !sidecar {
            errs.push(FieldError::forbidden(
                lp,
                "may not be set for init containers without restartPolicy=Always",
            ));
        } else {
            for (h, field) in [
                (&lifecycle.post_start, "postStart"),
                (&lifecycle.pre_stop, "preStop"),
            ] {
                if let Some(h) = h {
                    validate_lifecycle_handler(h, &format!("{lp}.{field}"), errs);
                }
            }
        }
    }
}

fn check_enum(value: &Option<String>, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = value {
        if !allowed.contains(&v.as_str()) {
            errs.push(FieldError::not_supported(path, v, allowed));
        }
    }
}

fn validate_env(env: &EnvVar, p: &str, errs: &mut Vec<FieldError>) {
    if env.name.is_empty() {
        errs.push(FieldError::required(format!("{p}.name"), ""));
    } else {
        for msg in env_var_name_errors(&env.name) {
            errs.push(FieldError::invalid(format!("{p}.name"), &env.name, msg));
        }
    }
    let Some(from) = &env.value_from else {
        return;
    };
    let vp = format!("{p}.valueFrom");
    if env.value.as_deref().is_some_and(|v| !v.is_empty()) {
        errs.push(FieldError::invalid(
            &vp,
            "",
            "may not be specified when `value` is not empty",
        ));
    }
    let count = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
        from.file_key_ref.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if count == 0 {
        errs.push(FieldError::invalid(
            &vp,
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if count > 1 {
        errs.push(FieldError::invalid(
            &vp,
            "",
            "may not have more than one field specified at a time",
        ));
    }
    if let Some(f) = &from.field_ref {
        let fp = format!("{vp}.fieldRef.fieldPath");
        if f.field_path.is_empty() {
            errs.push(FieldError::required(fp, ""));
        } else {
            let base = f.field_path.split('[').next().unwrap_or("");
            let subscripted = f.field_path.contains('[');
            let ok = if subscripted {
                matches!(base, "metadata.labels" | "metadata.annotations")
                    && f.field_path.ends_with("']")
            } else {
                FIELD_PATHS.contains(&base)
            };
            if !ok {
                errs.push(FieldError::not_supported(fp, &f.field_path, &FIELD_PATHS));
            }
        }
    }
    if let Some(r) = &from.resource_field_ref {
        if !RESOURCE_FIELDS.contains(&r.resource.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{vp}.resourceFieldRef.resource"),
                &r.resource,
                &RESOURCE_FIELDS,
            ));
        }
        if let Some(d) = &r.divisor {
            validate_quantity(d, &format!("{vp}.resourceFieldRef.divisor"), errs);
        }
    }
    let key_refs = [
        from.config_map_key_ref
            .as_ref()
            .map(|r| (&r.name, &r.key, "configMapKeyRef")),
        from.secret_key_ref
            .as_ref()
            .map(|r| (&r.name, &r.key, "secretKeyRef")),
    ];
    for (name, key, field) in key_refs.into_iter().flatten() {
        let kp = format!("{vp}.{field}");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{kp}.name"), ""));
        }
        if key.is_empty() {
            errs.push(FieldError::required(format!("{kp}.key"), ""));
        } else {
            for msg in config_key_errors(key) {
                errs.push(FieldError::invalid(format!("{kp}.key"), key, msg));
            }
        }
    }
}

fn validate_quantity(q: &Quantity, p: &str, errs: &mut Vec<FieldError>) -> Option<i128> {
    match parse_quantity(&q.0) {
        Err(msg) => {
            errs.push(FieldError::invalid(p, &q.0, msg));
            None
        }
        Ok(v) if v < 0 => {
            errs.push(FieldError::invalid(p, &q.0, NON_NEGATIVE));
            None
        }
        Ok(v) => Some(v),
    }
}

fn validate_resources(r: &ResourceRequirements, p: &str, errs: &mut Vec<FieldError>) {
    let mut parsed_limits = BTreeMap::new();
    for (field, map) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in map.iter().flatten() {
            let rp = format!("{p}.{field}[{name}]");
            for msg in qualified_name_errors(name) {
                errs.push(FieldError::invalid(&rp, name, msg));
            }
            let value = validate_quantity(q, &rp, errs);
            if field == "limits" {
                if let Some(v) = value {
                    parsed_limits.insert(name.as_str(), (v, q));
                }
            }
        }
    }
    for (name, q) in r.requests.iter().flatten() {
        let (Some((limit, limit_q)), Ok(request)) =
            (parsed_limits.get(name.as_str()), parse_quantity(&q.0))
        else {
            continue;
        };
        if request > *limit {
            errs.push(FieldError::invalid(
                format!("{p}.requests"),
                &q.0,
                format!(
                    "must be less than or equal to {name} limit of {}",
                    limit_q.0
                ),
            ));
        }
    }
}

fn validate_volume_mount<'a>(
    m: &'a VolumeMount,
    p: &str,
    volumes: &BTreeSet<&str>,
    mount_paths: &mut HashSet<&'a str>,
    errs: &mut Vec<FieldError>,
) {
    if m.name.is_empty() {
        errs.push(FieldError::required(format!("{p}.name"), ""));
    } else if !volumes.contains(m.name.as_str()) {
        errs.push(FieldError::invalid(
            format!("{p}.name"),
            &m.name,
            "must match the name of a volume",
        ));
    }
    if m.mount_path.is_empty() {
        errs.push(FieldError::required(format!("{p}.mountPath"), ""));
    } else {
        if !m.mount_path.starts_with('/') {
            errs.push(FieldError::invalid(
                format!("{p}.mountPath"),
                &m.mount_path,
                "must be an absolute path",
            ));
        }
        if !mount_paths.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                format!("{p}.mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
    }
    if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
        if sub.starts_with('/') {
            errs.push(FieldError::invalid(
                format!("{p}.subPath"),
                sub,
                "must be a relative path",
            ));
        } else if sub.split('/').any(|c| c == "..") {
            errs.push(FieldError::invalid(
                format!("{p}.subPath"),
                sub,
                "must not contain '..'",
            ));
        }
    }
}

/// Validates a port given as a number (1–65535) or an IANA port name.
pub(crate) fn validate_port_num_or_name(port: &IntOrString, p: &str, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.push(FieldError::invalid_number(p, i64::from(*n), PORT_RANGE));
            }
        }
        IntOrString::String(name) => {
            for msg in port_name_errors(name) {
                errs.push(FieldError::invalid(p, name, msg));
            }
        }
    }
}

fn validate_probe(probe: &Probe, p: &str, kind: &str, errs: &mut Vec<FieldError>) {
    let handlers = [
        ("exec", probe.exec.is_some()),
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("grpc", probe.grpc.is_some()),
    ];
    check_one_handler(&handlers, p, errs);
    if let Some(exec) = &probe.exec {
        if exec.command.as_ref().is_none_or(Vec::is_empty) {
            errs.push(FieldError::required(format!("{p}.exec.command"), ""));
        }
    }
    if let Some(get) = &probe.http_get {
        validate_http_get(get, &format!("{p}.httpGet"), errs);
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_port_num_or_name(&tcp.port, &format!("{p}.tcpSocket.port"), errs);
    }
    if let Some(grpc) = &probe.grpc {
        if !(1..=65535).contains(&grpc.port) {
            errs.push(FieldError::invalid_number(
                format!("{p}.grpc.port"),
                i64::from(grpc.port),
                PORT_RANGE,
            ));
        }
    }
    if let Some(d) = probe.initial_delay_seconds.filter(|d| *d < 0) {
        errs.push(FieldError::invalid_number(
            format!("{p}.initialDelaySeconds"),
            i64::from(d),
            NON_NEGATIVE,
        ));
    }
    for (value, field) in [
        (probe.timeout_seconds, "timeoutSeconds"),
        (probe.period_seconds, "periodSeconds"),
        (probe.success_threshold, "successThreshold"),
        (probe.failure_threshold, "failureThreshold"),
    ] {
        if let Some(v) = value.filter(|v| *v < 1) {
            errs.push(FieldError::invalid_number(
                format!("{p}.{field}"),
                i64::from(v),
                "must be greater than or equal to 1",
            ));
        }
    }
    if kind != "readinessProbe" {
        if let Some(v) = probe.success_threshold.filter(|v| *v > 1) {
            errs.push(FieldError::invalid_number(
                format!("{p}.successThreshold"),
                i64::from(v),
                "must be 1",
            ));
        }
    }
    if let Some(t) = probe.termination_grace_period_seconds {
        if kind == "readinessProbe" {
            errs.push(FieldError::invalid_number(
                format!("{p}.terminationGracePeriodSeconds"),
                t,
                "must not be set for readinessProbes",
            ));
        } else if t <= 0 {
            errs.push(FieldError::invalid_number(
                format!("{p}.terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
    }
}

fn check_one_handler(handlers: &[(&str, bool)], p: &str, errs: &mut Vec<FieldError>) {
    let present: Vec<&str> = handlers
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
    if present.is_empty() {
        errs.push(FieldError::required(p, "must specify a handler type"));
    }
    for extra in present.iter().skip(1) {
        errs.push(FieldError::forbidden(
            format!("{p}.{extra}"),
            "may not specify more than 1 handler type",
        ));
    }
}

fn validate_http_get(get: &HTTPGetAction, p: &str, errs: &mut Vec<FieldError>) {
    validate_port_num_or_name(&get.port, &format!("{p}.port"), errs);
    check_enum(
        &get.scheme,
        &format!("{p}.scheme"),
        &["HTTP", "HTTPS"],
        errs,
    );
}

fn validate_lifecycle_handler(h: &LifecycleHandler, p: &str, errs: &mut Vec<FieldError>) {
    let handlers = [
        ("exec", h.exec.is_some()),
        ("httpGet", h.http_get.is_some()),
        ("tcpSocket", h.tcp_socket.is_some()),
        ("sleep", h.sleep.is_some()),
    ];
    check_one_handler(&handlers, p, errs);
    if let Some(get) = &h.http_get {
        validate_http_get(get, &format!("{p}.httpGet"), errs);
    }
    if let Some(tcp) = &h.tcp_socket {
        validate_port_num_or_name(&tcp.port, &format!("{p}.tcpSocket.port"), errs);
    }
    if let Some(s) = h.sleep.as_ref().filter(|s| s.seconds < 0) {
        errs.push(FieldError::invalid_number(
            format!("{p}.sleep.seconds"),
            s.seconds,
            NON_NEGATIVE,
        ));
    }
}

fn validate_toleration(t: &Toleration, p: &str, errs: &mut Vec<FieldError>) {
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("");
    let value = t.value.as_deref().unwrap_or("");
    let effect = t.effect.as_deref().unwrap_or("");
    if key.is_empty() {
        if op != "Exists" {
            errs.push(FieldError::invalid(
                format!("{p}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
    } else {
        for msg in qualified_name_errors(key) {
            errs.push(FieldError::invalid(format!("{p}.key"), key, msg));
        }
    }
    if t.toleration_seconds.is_some() && effect != "NoExecute" {
        errs.push(FieldError::invalid(
            format!("{p}.effect"),
            effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    match op {
        "" | "Equal" => {
            for msg in super::names::label_value_errors(value) {
                errs.push(FieldError::invalid(format!("{p}.value"), value, msg));
            }
        }
        "Exists" => {
            if !value.is_empty() {
                errs.push(FieldError::invalid(
                    format!("{p}.operator"),
                    value,
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            format!("{p}.operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
        errs.push(FieldError::not_supported(
            format!("{p}.effect"),
            effect,
            &TAINT_EFFECTS,
        ));
    }
}

fn validate_affinity(a: &Affinity, p: &str, errs: &mut Vec<FieldError>) {
    if let Some(node) = &a.node_affinity {
        let np = format!("{p}.nodeAffinity");
        if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
            let rp = format!("{np}.requiredDuringSchedulingIgnoredDuringExecution");
            if required.node_selector_terms.is_empty() {
                errs.push(FieldError::required(
                    format!("{rp}.nodeSelectorTerms"),
                    "must have at least one node selector term",
                ));
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                validate_node_selector_term(term, &format!("{rp}.nodeSelectorTerms[{i}]"), errs);
            }
        }
        for (i, pref) in node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let pp = format!("{np}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            validate_weight(pref.weight, &format!("{pp}.weight"), errs);
            validate_node_selector_term(&pref.preference, &format!("{pp}.preference"), errs);
        }
    }
    let pod_affinities = [
        a.pod_affinity.as_ref().map(|x| {
            (
                &x.required_during_scheduling_ignored_during_execution,
                &x.preferred_during_scheduling_ignored_during_execution,
                "podAffinity",
            )
        }),
        a.pod_anti_affinity.as_ref().map(|x| {
            (
                &x.required_during_scheduling_ignored_during_execution,
                &x.preferred_during_scheduling_ignored_during_execution,
                "podAntiAffinity",
            )
        }),
    ];
    for (required, preferred, field) in pod_affinities.into_iter().flatten() {
        let ap = format!("{p}.{field}");
        for (i, term) in required.iter().flatten().enumerate() {
            validate_pod_affinity_term(
                term,
                &format!("{ap}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                errs,
            );
        }
        for (i, w) in preferred.iter().flatten().enumerate() {
            let wp = format!("{ap}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            validate_weight(w.weight, &format!("{wp}.weight"), errs);
            validate_pod_affinity_term(
                &w.pod_affinity_term,
                &format!("{wp}.podAffinityTerm"),
                errs,
            );
        }
    }
}

fn validate_weight(weight: i32, p: &str, errs: &mut Vec<FieldError>) {
    if !(1..=100).contains(&weight) {
        errs.push(FieldError::invalid_number(
            p,
            i64::from(weight),
            "must be in the range 1-100",
        ));
    }
}

fn validate_node_selector_term(term: &NodeSelectorTerm, p: &str, errs: &mut Vec<FieldError>) {
    for (field, reqs) in [
        ("matchExpressions", &term.match_expressions),
        ("matchFields", &term.match_fields),
    ] {
        for (i, req) in reqs.iter().flatten().enumerate() {
            let rp = format!("{p}.{field}[{i}]");
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        errs.push(FieldError::required(
                            format!("{rp}.values"),
                            "must be specified when `operator` is 'In' or 'NotIn'",
                        ));
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        errs.push(FieldError::forbidden(
                            format!("{rp}.values"),
                            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                        ));
                    }
                }
                "Gt" | "Lt" => {
                    if values.len() != 1 {
                        errs.push(FieldError::required(
                            format!("{rp}.values"),
                            "must be specified single value when `operator` is 'Lt' or 'Gt'",
                        ));
                    } else if values[0].parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            format!("{rp}.values[0]"),
                            &values[0],
                            "must be an integer",
                        ));
                    }
                }
                other => errs.push(FieldError::not_supported(
                    format!("{rp}.operator"),
                    other,
                    &NODE_SELECTOR_OPERATORS,
                )),
            }
            if field == "matchFields" {
                if req.key != "metadata.name" {
                    errs.push(FieldError::not_supported(
                        format!("{rp}.key"),
                        &req.key,
                        &["metadata.name"],
                    ));
                }
            } else {
                for msg in qualified_name_errors(&req.key) {
                    errs.push(FieldError::invalid(format!("{rp}.key"), &req.key, msg));
                }
            }
        }
    }
}

fn validate_pod_affinity_term(term: &PodAffinityTerm, p: &str, errs: &mut Vec<FieldError>) {
    if let Some(sel) = &term.label_selector {
        errs.extend(validate_label_selector(sel, &format!("{p}.labelSelector")));
    }
    if let Some(sel) = &term.namespace_selector {
        errs.extend(validate_label_selector(
            sel,
            &format!("{p}.namespaceSelector"),
        ));
    }
    for (i, ns) in term.namespaces.iter().flatten().enumerate() {
        for msg in dns1123_label_errors(ns) {
            errs.push(FieldError::invalid(format!("{p}.namespaces[{i}]"), ns, msg));
        }
    }
    if term.topology_key.is_empty() {
        errs.push(FieldError::required(
            format!("{p}.topologyKey"),
            "can not be empty",
        ));
    } else {
        for msg in qualified_name_errors(&term.topology_key) {
            errs.push(FieldError::invalid(
                format!("{p}.topologyKey"),
                &term.topology_key,
                msg,
            ));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admission::testing::fields;
    use crate::admission::FieldErrorKind;
    use k8s_openapi::api::core::v1::{
        ContainerPort, EmptyDirVolumeSource, EnvVarSource, HostPathVolumeSource, NFSVolumeSource,
        ObjectFieldSelector, TCPSocketAction,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    pub(crate) fn spec(containers: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            ..Default::default()
        }
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn a_minimal_pod_is_valid_after_defaulting() {
        let mut p = pod(spec(vec![container("web", "nginx:1.27")]));
        p.default_fields();
        assert_eq!(p.validate(), vec![]);
    }

    #[test]
    fn defaulting_fills_the_kubernetes_pod_defaults() {
        let mut c = container("web", "nginx");
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            ..Default::default()
        }]);
        c.liveness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            timeout_seconds: Some(0),
            ..Default::default()
        });
        let mut p = pod(spec(vec![c]));
        p.default_fields();
        let s = p.spec.as_ref().unwrap();
        assert_eq!(s.restart_policy.as_deref(), Some("Always"));
        assert_eq!(s.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(s.termination_grace_period_seconds, Some(30));
        assert_eq!(s.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(s.security_context, Some(PodSecurityContext::default()));
        assert_eq!(s.enable_service_links, Some(true));
        let c = &s.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = c.liveness_probe.as_ref().unwrap();
        assert_eq!(probe.timeout_seconds, Some(1));
        assert_eq!(probe.period_seconds, Some(10));
        assert_eq!(probe.success_threshold, Some(1));
        assert_eq!(probe.failure_threshold, Some(3));
        assert_eq!(
            probe.http_get.as_ref().unwrap().scheme.as_deref(),
            Some("HTTP")
        );
    }

    #[test]
    fn defaulting_a_pod_twice_changes_nothing() {
        let mut c = container("web", "nginx:1.27");
        c.resources = Some(ResourceRequirements {
            limits: Some([("cpu".to_string(), q("1"))].into()),
            ..Default::default()
        });
        c.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".into()),
                host: None,
            }),
            ..Default::default()
        });
        let mut p = pod(spec(vec![c]));
        p.default_fields();
        let once = p.clone();
        p.default_fields();
        assert_eq!(p, once);
    }

    #[test]
    fn pull_policy_follows_the_image_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1.0", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            let mut c = container("a", image);
            default_container(&mut c, false);
            assert_eq!(c.image_pull_policy.as_deref(), Some(policy), "{image}");
        }
    }

    #[test]
    fn a_pod_requests_its_limits_when_it_requests_nothing() {
        let mut c = container("web", "nginx:1");
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), q("500m")),
                    ("memory".to_string(), q("1Gi")),
                ]
                .into(),
            ),
            requests: Some([("cpu".to_string(), q("100m"))].into()),
            ..Default::default()
        });
        let mut p = pod(spec(vec![c]));
        p.default_fields();
        let requests = p.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(requests["cpu"], q("100m"));
        assert_eq!(requests["memory"], q("1Gi"));
    }

    #[test]
    fn a_pod_without_containers_is_refused() {
        let errs = pod(spec(vec![])).validate();
        assert_eq!(errs, vec![FieldError::required("spec.containers", "")]);
    }

    #[test]
    fn container_without_image_is_refused() {
        let errs = pod(spec(vec![container("web", "  ")])).validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn container_without_name_is_refused() {
        let errs = pod(spec(vec![container("", "nginx")])).validate();
        assert_eq!(
            errs[0].to_string(),
            "spec.containers[0].name: Required value"
        );
    }

    #[test]
    fn container_names_are_unique_across_init_and_regular_containers() {
        let mut s = spec(vec![container("a", "x"), container("b", "x")]);
        s.init_containers = Some(vec![container("b", "x")]);
        let errs = pod(s).validate();
        assert_eq!(fields(&errs), ["spec.containers[1].name"]);
        assert_eq!(errs[0].kind, FieldErrorKind::Duplicate("\"b\"".into()));
    }

    #[test]
    fn all_problems_are_reported_not_just_the_first() {
        let mut c = container("Bad_Name", "");
        c.ports = Some(vec![
            ContainerPort {
                container_port: 70000,
                protocol: Some("HTTP".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            ContainerPort {
                container_port: 81,
                host_port: Some(-1),
                name: Some("web".into()),
                ..Default::default()
            },
        ]);
        let mut s = spec(vec![c]);
        s.restart_policy = Some("Sometimes".into());
        s.dns_policy = Some("Google".into());
        s.termination_grace_period_seconds = Some(-1);
        s.active_deadline_seconds = Some(0);
        let errs = pod(s).validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[0].protocol",
                "spec.containers[0].ports[1].hostPort",
                "spec.containers[0].ports[1].name",
                "spec.restartPolicy",
                "spec.dnsPolicy",
                "spec.terminationGracePeriodSeconds",
                "spec.activeDeadlineSeconds",
            ]
        );
        assert_eq!(
            errs[6].to_string(),
            r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#
        );
    }

    #[test]
    fn env_names_and_sources_are_checked() {
        let mut c = container("web", "x");
        c.env = Some(vec![
            EnvVar {
                name: "GOOD".into(),
                value: Some("1".into()),
                value_from: None,
            },
            EnvVar {
                name: "A=B".into(),
                value: None,
                value_from: None,
            },
            EnvVar {
                name: "NONE".into(),
                value: None,
                value_from: Some(EnvVarSource::default()),
            },
            EnvVar {
                name: "POD".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels['app']".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
            EnvVar {
                name: "BAD".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.secret".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
        ]);
        let errs = pod(spec(vec![c])).validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].env[1].name",
                "spec.containers[0].env[2].valueFrom",
                "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath",
            ]
        );
    }

    #[test]
    fn quantities_must_parse_be_non_negative_and_requests_fit_limits() {
        let mut c = container("web", "x");
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), q("1")),
                    ("memory".to_string(), q("lots")),
                ]
                .into(),
            ),
            requests: Some(
                [
                    ("cpu".to_string(), q("2")),
                    ("ephemeral-storage".to_string(), q("-1Gi")),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let errs = pod(spec(vec![c])).validate();
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(rendered.len(), 3, "{rendered:#?}");
        assert!(rendered[0].starts_with(r#"spec.containers[0].resources.limits[memory]: Invalid value: "lots": quantities must match"#));
        assert_eq!(
            rendered[1],
            r#"spec.containers[0].resources.requests[ephemeral-storage]: Invalid value: "-1Gi": must be greater than or equal to 0"#
        );
        assert_eq!(
            rendered[2],
            r#"spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1"#
        );
    }

    #[test]
    fn volumes_and_mounts_are_checked() {
        let mut c = container("web", "x");
        c.volume_mounts = Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "missing".into(),
                mount_path: "relative".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
        ]);
        let mut s = spec(vec![c]);
        s.volumes = Some(vec![
            Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "data".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/data".into(),
                    type_: None,
                }),
                ..Default::default()
            },
            Volume {
                name: "none".into(),
                ..Default::default()
            },
            Volume {
                name: "nfs".into(),
                nfs: Some(NFSVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "two".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                host_path: Some(HostPathVolumeSource {
                    path: "/x".into(),
                    type_: None,
                }),
                ..Default::default()
            },
        ]);
        let errs = pod(s).validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.volumes[1].name",
                "spec.volumes[2]",
                "spec.volumes[3].nfs",
                "spec.volumes[4].hostPath",
                "spec.containers[0].volumeMounts[1].name",
                "spec.containers[0].volumeMounts[1].mountPath",
                "spec.containers[0].volumeMounts[2].mountPath",
            ]
        );
        assert!(errs[2].detail.contains("volume type nfs is not supported"));
    }

    #[test]
    fn probes_need_exactly_one_handler_and_sane_thresholds() {
        let mut c = container("web", "x");
        c.liveness_probe = Some(Probe::default());
        c.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("a--b".into()),
                ..Default::default()
            }),
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(0),
                host: None,
            }),
            failure_threshold: Some(0),
            ..Default::default()
        });
        c.startup_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(8080),
                host: None,
            }),
            success_threshold: Some(2),
            ..Default::default()
        });
        let errs = pod(spec(vec![c])).validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].livenessProbe",
                "spec.containers[0].readinessProbe.tcpSocket",
                "spec.containers[0].readinessProbe.httpGet.port",
                "spec.containers[0].readinessProbe.tcpSocket.port",
                "spec.containers[0].readinessProbe.failureThreshold",
                "spec.containers[0].startupProbe.successThreshold",
            ]
        );
    }

    #[test]
    fn tolerations_and_node_selector_are_checked() {
        let mut s = spec(vec![container("web", "x")]);
        s.node_selector = Some([("kubernetes.io/os".to_string(), "linux".to_string())].into());
        s.tolerations = Some(vec![
            Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            },
            Toleration {
                key: Some("k".into()),
                operator: Some("Exists".into()),
                value: Some("v".into()),
                effect: Some("NoWay".into()),
                ..Default::default()
            },
            Toleration {
                key: Some("k".into()),
                operator: Some("Like".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: Some(5),
                ..Default::default()
            },
        ]);
        let errs = pod(s).validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.tolerations[1].operator",
                "spec.tolerations[1].effect",
                "spec.tolerations[2].effect",
                "spec.tolerations[2].operator",
            ]
        );
    }

    #[test]
    fn pod_updates_may_change_images_but_not_commands() {
        let mut old = pod(spec(vec![container("web", "nginx:1")]));
        old.default_fields();
        let mut new = old.clone();
        new.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        new.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        new.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert_eq!(new.validate_update(&old), vec![]);

        let mut bad = new.clone();
        bad.spec.as_mut().unwrap().containers[0].command = Some(vec!["sh".into()]);
        bad.spec.as_mut().unwrap().tolerations = None;
        bad.spec.as_mut().unwrap().active_deadline_seconds = Some(120);
        let errs = bad.validate_update(&new);
        assert_eq!(
            fields(&errs),
            ["spec.activeDeadlineSeconds", "spec.tolerations[0]", "spec"]
        );
        assert!(errs[2]
            .detail
            .starts_with("pod updates may not change fields"));
    }

    #[test]
    fn node_name_is_set_only_by_binding_and_never_changes() {
        let mut old = pod(spec(vec![container("web", "nginx:1")]));
        let mut bound = old.clone();
        bound.spec.as_mut().unwrap().node_name = Some("node-1".into());
        assert_eq!(fields(&bound.validate_update(&old)), ["spec.nodeName"]);
        assert_eq!(
            bound.validate_update(&old)[0].kind,
            FieldErrorKind::Forbidden
        );

        let mut moved = bound.clone();
        moved.spec.as_mut().unwrap().node_name = Some("node-2".into());
        let errs = moved.validate_update(&bound);
        assert_eq!(errs[0].kind, FieldErrorKind::Immutable);

        assert_eq!(validate_pod_binding(&old, "node-1"), vec![]);
        assert_eq!(
            fields(&validate_pod_binding(&bound, "node-2")),
            ["spec.nodeName"]
        );
        assert_eq!(
            fields(&validate_pod_binding(&old, "Node_1")),
            ["target.name"]
        );
        old.metadata.name = Some("renamed".into());
        assert_eq!(
            fields(&old.validate_update(&bound)),
            ["metadata.name", "spec.nodeName"]
        );
    }

    #[test]
    fn node_affinity_operators_are_checked() {
        use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelector, NodeSelectorRequirement};
        let mut s = spec(vec![container("web", "x")]);
        s.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![
                            NodeSelectorRequirement {
                                key: "zone".into(),
                                operator: "In".into(),
                                values: Some(vec!["a".into()]),
                            },
                            NodeSelectorRequirement {
                                key: "cpus".into(),
                                operator: "Gt".into(),
                                values: Some(vec!["many".into()]),
                            },
                            NodeSelectorRequirement {
                                key: "x".into(),
                                operator: "Near".into(),
                                values: None,
                            },
                        ]),
                        match_fields: None,
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        });
        let errs = pod(s).validate();
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }
}
