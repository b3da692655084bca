//! kubectl-style output for `bosun get` and `bosun describe`.
//!
//! Objects arrive as untyped `serde_json::Value`s (whatever the API server returned), so
//! every field is optional here: a missing or malformed field prints the way kubectl
//! prints an unset one (`<none>`, `""` or `0`), never a panic. Where the API server would
//! have filled in a default (a Deployment's one replica, a Service's `ClusterIP` type,
//! `TCP` ports) the default is shown.
//!
//! Start at [`table`] for `get` and [`describe`] for `describe`; both lay text out the way
//! kubectl's tab writer does.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde_json::{Map, Value};

/// Spaces between table columns, as kubectl prints them.
const TABLE_PADDING: usize = 3;
/// kubectl never makes a table column narrower than this (padding included).
const TABLE_MIN_WIDTH: usize = 6;
/// Spaces between a `describe` label and its value.
const DESCRIBE_PADDING: usize = 2;
/// Longer annotation values are cut in `describe`, so one blob cannot bury the rest.
const MAX_ANNOTATION_LEN: usize = 140;
/// `get endpoints` lists this many addresses, then counts the rest.
const MAX_ENDPOINTS_SHOWN: usize = 3;
/// The annotation `kubectl apply` keeps; noise to a reader, so `describe` hides it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Column layout for `get`, like kubectl's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Column titles; [`Table::render`] prints them in upper case.
    pub headers: Vec<String>,
    /// One row per object, cells in header order.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Lays the table out like kubectl: every column but the last is padded with spaces to
    /// its widest cell plus three, headers in upper case, each line ends in `\n` and
    /// carries no trailing spaces.
    pub fn render(&self) -> String {
        if self.headers.is_empty() && self.rows.is_empty() {
            return String::new();
        }
        let header: Vec<String> = self
            .headers
            .iter()
            .map(|h| one_line(&h.to_uppercase()))
            .collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|c| one_line(c)).collect())
            .collect();
        let lines: Vec<Vec<&str>> = std::iter::once(&header)
            .chain(rows.iter())
            .map(|row| row.iter().map(String::as_str).collect())
            .collect();
        align(&lines, TABLE_MIN_WIDTH, TABLE_PADDING)
    }
}

/// Rows for `bosun get <resource>`; `kind` is the object kind ("Pod", "Deployment", ...).
/// `wide` adds kubectl's -o wide columns; `with_namespace` puts a NAMESPACE column first
/// (for -A), except for kinds that have no namespace. `now` is the current time (for AGE).
pub fn table(
    kind: &str,
    objs: &[Value],
    wide: bool,
    with_namespace: bool,
    now: Timestamp,
) -> Table {
    let (mut headers, row): (Vec<&str>, RowFn) = match kind.to_ascii_lowercase().as_str() {
        "pod" => (
            with_wide(
                &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
                wide,
            ),
            pod_row,
        ),
        "deployment" => (
            with_wide(
                &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                WORKLOAD_WIDE,
                wide,
            ),
            deployment_row,
        ),
        "replicaset" => (
            with_wide(
                &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
                WORKLOAD_WIDE,
                wide,
            ),
            replica_set_row,
        ),
        "daemonset" => (
            with_wide(
                &[
                    "NAME",
                    "DESIRED",
                    "CURRENT",
                    "READY",
                    "UP-TO-DATE",
                    "AVAILABLE",
                    "NODE SELECTOR",
                    "AGE",
                ],
                WORKLOAD_WIDE,
                wide,
            ),
            daemon_set_row,
        ),
        "job" => (
            with_wide(
                &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
                WORKLOAD_WIDE,
                wide,
            ),
            job_row,
        ),
        "service" => (
            with_wide(
                &[
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "AGE",
                ],
                &["SELECTOR"],
                wide,
            ),
            service_row,
        ),
        "endpoints" => (vec!["NAME", "ENDPOINTS", "AGE"], endpoints_row),
        "node" => (
            with_wide(
                &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
                &[
                    "INTERNAL-IP",
                    "EXTERNAL-IP",
                    "OS-IMAGE",
                    "KERNEL-VERSION",
                    "CONTAINER-RUNTIME",
                ],
                wide,
            ),
            node_row,
        ),
        "namespace" => (vec!["NAME", "STATUS", "AGE"], namespace_row),
        "configmap" => (vec!["NAME", "DATA", "AGE"], config_map_row),
        "secret" => (vec!["NAME", "TYPE", "DATA", "AGE"], secret_row),
        "lease" => (vec!["NAME", "HOLDER", "AGE"], lease_row),
        "event" => (
            with_wide(
                &["LAST SEEN", "TYPE", "REASON", "OBJECT"],
                &[
                    "SUBOBJECT",
                    "SOURCE",
                    "MESSAGE",
                    "FIRST SEEN",
                    "COUNT",
                    "NAME",
                ],
                wide,
            )
            .into_iter()
            .chain((!wide).then_some("MESSAGE"))
            .collect(),
            event_row,
        ),
        "role" | "clusterrole" => (vec!["NAME", "CREATED AT"], role_row),
        "rolebinding" | "clusterrolebinding" => (
            with_wide(
                &["NAME", "ROLE", "AGE"],
                &["USERS", "GROUPS", "SERVICEACCOUNTS"],
                wide,
            ),
            role_binding_row,
        ),
        _ => (vec!["NAME", "AGE"], default_row),
    };
    let namespaced = with_namespace && !is_cluster_scoped(kind);
    if namespaced {
        headers.insert(0, "NAMESPACE");
    }
    let rows = objs
        .iter()
        .map(|obj| {
            let mut cells = Vec::with_capacity(headers.len());
            if namespaced {
                cells.push(str_at(obj, "/metadata/namespace").to_string());
            }
            cells.extend(row(obj, wide, now));
            cells
        })
        .collect();
    Table {
        headers: headers.into_iter().map(String::from).collect(),
        rows,
    }
}

/// kubectl's age format: "5s", "3m12s" (under 10 min), "42m", "5h3m" (under 8 h), "3d4h"
/// (under 8 days), "45d", "2y34d" (under 8 years); missing/invalid timestamp -> "<unknown>".
pub fn age(created: Option<&str>, now: Timestamp) -> String {
    match created.and_then(parse_time) {
        Some(t) => since(t, now),
        None => "<unknown>".to_string(),
    }
}

/// `bosun describe` text for one object, like kubectl describe: Name, Namespace, Labels,
/// Annotations (without kubectl.kubernetes.io/last-applied-configuration), then
/// kind-specific sections, then Events (given, already filtered to this object, as Event
/// objects) as a table "Type Reason Age From Message" or "Events: <none>".
pub fn describe(obj: &Value, events: &[Value], now: Timestamp) -> String {
    let mut doc = Doc::default();
    match str_at(obj, "/kind") {
        "Pod" => describe_pod(&mut doc, obj, now),
        "Deployment" => describe_deployment(&mut doc, obj, now),
        "Service" => describe_service(&mut doc, obj),
        "Node" => describe_node(&mut doc, obj),
        "ConfigMap" => describe_config_map(&mut doc, obj),
        "Secret" => describe_secret(&mut doc, obj),
        _ => describe_generic(&mut doc, obj),
    }
    describe_events(&mut doc, events, now);
    doc.finish()
}

// ---------------------------------------------------------------------------------------
// Rows for `get`
// ---------------------------------------------------------------------------------------

/// The -o wide columns of every workload kind.
const WORKLOAD_WIDE: &[&str] = &["CONTAINERS", "IMAGES", "SELECTOR"];

/// Makes the cells of one row (without the NAMESPACE cell).
type RowFn = fn(&Value, bool, Timestamp) -> Vec<String>;

fn with_wide<'a>(base: &[&'a str], extra: &[&'a str], wide: bool) -> Vec<&'a str> {
    let mut headers = base.to_vec();
    if wide {
        headers.extend_from_slice(extra);
    }
    headers
}

/// Kinds without a namespace get no NAMESPACE column under -A, as in kubectl.
fn is_cluster_scoped(kind: &str) -> bool {
    const CLUSTER_SCOPED: &[&str] = &[
        "node",
        "namespace",
        "clusterrole",
        "clusterrolebinding",
        "persistentvolume",
        "storageclass",
        "customresourcedefinition",
        "priorityclass",
        "ingressclass",
        "runtimeclass",
        "csidriver",
        "csinode",
        "volumeattachment",
        "apiservice",
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
        "componentstatus",
    ];
    CLUSTER_SCOPED.contains(&kind.to_ascii_lowercase().as_str())
}

fn name_of(obj: &Value) -> String {
    str_at(obj, "/metadata/name").to_string()
}

fn age_of(obj: &Value, now: Timestamp) -> String {
    age(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    )
}

fn default_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    vec![name_of(obj), age_of(obj, now)]
}

/// What kubectl condenses a pod into for its READY, STATUS and RESTARTS columns.
struct PodSummary {
    ready: usize,
    total: usize,
    status: String,
    restarts: i64,
    /// When a container last ended before being restarted: shown as "(2m ago)".
    last_restart: Option<Timestamp>,
}

impl PodSummary {
    fn of(pod: &Value) -> PodSummary {
        let phase = str_at(pod, "/status/phase");
        let mut status = match str_at(pod, "/status/reason") {
            "" if phase.is_empty() => "Pending".to_string(),
            "" => phase.to_string(),
            reason => reason.to_string(),
        };
        if array_at(pod, "/status/conditions").iter().any(|c| {
            str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated"
        }) {
            status = "SchedulingGated".to_string();
        }

        let init_specs = array_at(pod, "/spec/initContainers");
        // Init containers that restart forever are sidecars: they count as containers.
        let sidecars: BTreeSet<&str> = init_specs
            .iter()
            .filter(|c| str_at(c, "/restartPolicy") == "Always")
            .map(|c| str_at(c, "/name"))
            .collect();
        let statuses = array_at(pod, "/status/containerStatuses");
        let spec_containers = array_at(pod, "/spec/containers").len();
        let total = if spec_containers == 0 {
            statuses.len()
        } else {
            spec_containers + sidecars.len()
        };

        let mut ready = 0;
        let mut restarts = 0;
        let mut last_restart = None;
        let mut sidecar_restarts = 0;
        let mut sidecar_last_restart = None;
        let mut initializing = false;
        for (index, c) in array_at(pod, "/status/initContainerStatuses")
            .iter()
            .enumerate()
        {
            let count = int_at(c, "/restartCount");
            let finished = time_at(c, "/lastState/terminated/finishedAt");
            restarts += count;
            last_restart = later(last_restart, finished);
            let sidecar = sidecars.contains(str_at(c, "/name"));
            if sidecar {
                sidecar_restarts += count;
                sidecar_last_restart = later(sidecar_last_restart, finished);
            }
            let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
            let waiting_reason = str_at(c, "/state/waiting/reason");
            if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
                continue;
            }
            if sidecar && bool_at(c, "/started") {
                if bool_at(c, "/ready") {
                    ready += 1;
                }
                continue;
            }
            status = if let Some(t) = terminated {
                match str_at(t, "/reason") {
                    "" if int_at(t, "/signal") != 0 => {
                        format!("Init:Signal:{}", int_at(t, "/signal"))
                    }
                    "" => format!("Init:ExitCode:{}", int_at(t, "/exitCode")),
                    reason => format!("Init:{reason}"),
                }
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                format!("Init:{waiting_reason}")
            } else {
                format!("Init:{index}/{}", init_specs.len())
            };
            initializing = true;
            break;
        }

        if !initializing || condition_is_true(pod, "Initialized") {
            restarts = sidecar_restarts;
            last_restart = sidecar_last_restart;
            let mut has_running = false;
            // Backwards, so the first container's trouble is the one that shows.
            for c in statuses.iter().rev() {
                restarts += int_at(c, "/restartCount");
                last_restart = later(last_restart, time_at(c, "/lastState/terminated/finishedAt"));
                let waiting_reason = str_at(c, "/state/waiting/reason");
                let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
                if !waiting_reason.is_empty() {
                    status = waiting_reason.to_string();
                } else if let Some(t) = terminated {
                    status = match str_at(t, "/reason") {
                        "" if int_at(t, "/signal") != 0 => {
                            format!("Signal:{}", int_at(t, "/signal"))
                        }
                        "" => format!("ExitCode:{}", int_at(t, "/exitCode")),
                        reason => reason.to_string(),
                    };
                } else if bool_at(c, "/ready") && c.pointer("/state/running").is_some() {
                    has_running = true;
                    ready += 1;
                }
            }
            // One finished container does not make a pod whose others still run finished.
            if status == "Completed" && has_running {
                status = if condition_is_true(pod, "Ready") {
                    "Running".to_string()
                } else {
                    "NotReady".to_string()
                };
            }
        }

        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            if str_at(pod, "/status/reason") == "NodeLost" {
                status = "Unknown".to_string();
            } else if phase != "Succeeded" && phase != "Failed" {
                status = "Terminating".to_string();
            }
        }

        PodSummary {
            ready,
            total,
            status,
            restarts,
            last_restart,
        }
    }
}

fn pod_row(pod: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let summary = PodSummary::of(pod);
    let restarts = match summary.last_restart {
        Some(when) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, since(when, now))
        }
        _ => summary.restarts.to_string(),
    };
    let mut cells = vec![
        name_of(pod),
        format!("{}/{}", summary.ready, summary.total),
        summary.status,
        restarts,
        age_of(pod, now),
    ];
    if wide {
        let ip = array_at(pod, "/status/podIPs")
            .first()
            .map(|ip| str_at(ip, "/ip"))
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| str_at(pod, "/status/podIP"));
        let gates = array_at(pod, "/spec/readinessGates");
        let readiness_gates = if gates.is_empty() {
            "<none>".to_string()
        } else {
            let met = gates
                .iter()
                .filter(|g| condition_is_true(pod, str_at(g, "/conditionType")))
                .count();
            format!("{met}/{}", gates.len())
        };
        cells.extend([
            or_none(ip),
            or_none(str_at(pod, "/spec/nodeName")),
            or_none(str_at(pod, "/status/nominatedNodeName")),
            readiness_gates,
        ]);
    }
    cells
}

/// A workload's row: NAME, `columns`, AGE, then under -o wide its CONTAINERS, IMAGES and
/// SELECTOR, where an empty selector prints as `empty_selector`.
fn workload_row(
    obj: &Value,
    columns: impl IntoIterator<Item = String>,
    wide: bool,
    now: Timestamp,
    empty_selector: &str,
) -> Vec<String> {
    let mut cells = vec![name_of(obj)];
    cells.extend(columns);
    cells.push(age_of(obj, now));
    if wide {
        let containers = array_at(obj, "/spec/template/spec/containers");
        let join = |field: &str| {
            containers
                .iter()
                .map(|c| str_at(c, field))
                .collect::<Vec<_>>()
                .join(",")
        };
        let selector = selector_string(obj.pointer("/spec/selector"));
        cells.extend([
            join("/name"),
            join("/image"),
            or_default(&selector, empty_selector).to_string(),
        ]);
    }
    cells
}

/// Replicas the API server would default to when the spec leaves them out.
fn desired_replicas(obj: &Value) -> i64 {
    match obj.pointer("/spec/replicas") {
        Some(v) if !v.is_null() => as_int(v),
        _ => 1,
    }
}

fn deployment_row(obj: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let ready = format!(
        "{}/{}",
        int_at(obj, "/status/readyReplicas"),
        desired_replicas(obj)
    );
    let counts = ["/status/updatedReplicas", "/status/availableReplicas"]
        .map(|field| int_at(obj, field).to_string());
    workload_row(obj, std::iter::once(ready).chain(counts), wide, now, "")
}

fn replica_set_row(obj: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let counts =
        ["/status/replicas", "/status/readyReplicas"].map(|field| int_at(obj, field).to_string());
    let desired = desired_replicas(obj).to_string();
    workload_row(obj, std::iter::once(desired).chain(counts), wide, now, "")
}

fn daemon_set_row(obj: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let counts = [
        "/status/desiredNumberScheduled",
        "/status/currentNumberScheduled",
        "/status/numberReady",
        "/status/updatedNumberScheduled",
        "/status/numberAvailable",
    ]
    .map(|field| int_at(obj, field).to_string());
    let node_selector = format_labels(obj.pointer("/spec/template/spec/nodeSelector"));
    workload_row(
        obj,
        counts.into_iter().chain([node_selector]),
        wide,
        now,
        "",
    )
}

fn job_row(obj: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let succeeded = int_at(obj, "/status/succeeded");
    let completions = match obj.pointer("/spec/completions").filter(|v| !v.is_null()) {
        Some(wanted) => format!("{succeeded}/{}", as_int(wanted)),
        None => match int_at(obj, "/spec/parallelism") {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(obj, "/status/startTime"),
        time_at(obj, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => since(start, now),
        (Some(start), Some(end)) => since(start, end),
    };
    let status = if condition_is_true(obj, "Complete") {
        "Complete"
    } else if condition_is_true(obj, "Failed") {
        "Failed"
    } else if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else if condition_is_true(obj, "Suspended") {
        "Suspended"
    } else if condition_is_true(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let columns = [status.to_string(), completions, duration];
    workload_row(obj, columns, wide, now, "<none>")
}

fn service_type(svc: &Value) -> &str {
    match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        other => other,
    }
}

fn service_row(svc: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let cluster_ip = array_at(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, "/spec/clusterIP"));
    let ports = array_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = or_default(str_at(p, "/protocol"), "TCP");
            match int_at(p, "/nodePort") {
                node_port if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", int_at(p, "/port"))
                }
                _ => format!("{}/{protocol}", int_at(p, "/port")),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut cells = vec![
        name_of(svc),
        service_type(svc).to_string(),
        or_none(cluster_ip),
        service_external_ip(svc, wide),
        or_none(&ports),
        age_of(svc, now),
    ];
    if wide {
        cells.push(format_labels(svc.pointer("/spec/selector")));
    }
    cells
}

fn service_external_ip(svc: &Value, wide: bool) -> String {
    let external: Vec<&str> = array_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let ingress: Vec<&str> = array_at(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| or_default(str_at(i, "/ip"), str_at(i, "/hostname")))
                .filter(|a| !a.is_empty())
                .collect();
            let mut balancer = ingress.join(",");
            // kubectl shortens long balancer addresses unless asked for wide output.
            if !wide && balancer.chars().count() > 16 {
                balancer = balancer.chars().take(13).collect::<String>() + "...";
            }
            let all: Vec<&str> = balancer
                .split(',')
                .filter(|a| !a.is_empty())
                .chain(external)
                .collect();
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn endpoints_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    vec![name_of(obj), format_endpoints(obj), age_of(obj, now)]
}

fn format_endpoints(obj: &Value) -> String {
    let subsets = array_at(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown = Vec::new();
    let mut total = 0;
    for subset in subsets {
        let addresses: Vec<&str> = array_at(subset, "/addresses")
            .iter()
            .map(|a| str_at(a, "/ip"))
            .collect();
        let ports = array_at(subset, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports: list bare addresses.
            total += addresses.len();
            shown.extend(addresses.iter().map(|ip| ip.to_string()));
            continue;
        }
        for port in ports {
            total += addresses.len();
            let port = int_at(port, "/port");
            shown.extend(addresses.iter().map(|ip| host_port(ip, port)));
        }
    }
    if total > MAX_ENDPOINTS_SHOWN {
        shown.truncate(MAX_ENDPOINTS_SHOWN);
        format!(
            "{} + {} more...",
            shown.join(","),
            total - MAX_ENDPOINTS_SHOWN
        )
    } else {
        shown.join(",")
    }
}

fn host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn node_row(node: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let ready = array_at(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| str_at(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if bool_at(node, "/spec/unschedulable") {
        status.push_str(",SchedulingDisabled");
    }
    let mut cells = vec![
        name_of(node),
        status,
        or_none(&node_roles(node).join(",")),
        age_of(node, now),
        str_at(node, "/status/nodeInfo/kubeletVersion").to_string(),
    ];
    if wide {
        let address = |kind: &str| {
            array_at(node, "/status/addresses")
                .iter()
                .find(|a| str_at(a, "/type") == kind)
                .map(|a| str_at(a, "/address"))
                .unwrap_or("")
        };
        let info = |field: &str| or_default(str_at(node, field), "<unknown>").to_string();
        cells.extend([
            or_none(address("InternalIP")),
            or_none(address("ExternalIP")),
            info("/status/nodeInfo/osImage"),
            info("/status/nodeInfo/kernelVersion"),
            info("/status/nodeInfo/containerRuntimeVersion"),
        ]);
    }
    cells
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the older `kubernetes.io/role`.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|r| !r.is_empty()) {
                    roles.insert(role.to_string());
                }
            }
        }
    }
    roles.into_iter().collect()
}

fn namespace_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    vec![
        name_of(obj),
        or_default(str_at(obj, "/status/phase"), "Active").to_string(),
        age_of(obj, now),
    ]
}

fn config_map_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    let count = map_len(obj, "/data") + map_len(obj, "/binaryData");
    vec![name_of(obj), count.to_string(), age_of(obj, now)]
}

fn secret_keys(obj: &Value) -> BTreeSet<&str> {
    ["/data", "/stringData"]
        .iter()
        .filter_map(|field| obj.pointer(field).and_then(Value::as_object))
        .flat_map(|m| m.keys().map(String::as_str))
        .collect()
}

fn secret_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    vec![
        name_of(obj),
        or_default(str_at(obj, "/type"), "Opaque").to_string(),
        secret_keys(obj).len().to_string(),
        age_of(obj, now),
    ]
}

fn lease_row(obj: &Value, _wide: bool, now: Timestamp) -> Vec<String> {
    vec![
        name_of(obj),
        str_at(obj, "/spec/holderIdentity").to_string(),
        age_of(obj, now),
    ]
}

/// When an event was first seen: its old-API first timestamp, else its new-API event time.
fn event_first_seen(event: &Value) -> Option<Timestamp> {
    time_at(event, "/firstTimestamp").or_else(|| time_at(event, "/eventTime"))
}

fn event_row(event: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let first = event_first_seen(event);
    let mut last = time_at(event, "/lastTimestamp").or(first);
    let mut count = int_at(event, "/count");
    if event.pointer("/series").is_some_and(Value::is_object) {
        last = time_at(event, "/series/lastObservedTime");
        count = int_at(event, "/series/count");
    } else if count == 0 {
        // Events of the new API seen once carry no count.
        count = 1;
    }
    let stamp = |t: Option<Timestamp>| t.map_or_else(|| "<unknown>".to_string(), |t| since(t, now));
    let kind = str_at(event, "/involvedObject/kind").to_lowercase();
    let object = match str_at(event, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let message = str_at(event, "/message").trim().to_string();
    let mut cells = vec![
        stamp(last),
        str_at(event, "/type").to_string(),
        str_at(event, "/reason").to_string(),
        object,
    ];
    if wide {
        let component = or_default(
            str_at(event, "/source/component"),
            str_at(event, "/reportingController"),
        );
        let instance = or_default(
            str_at(event, "/source/host"),
            str_at(event, "/reportingInstance"),
        );
        let source = if instance.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {instance}")
        };
        cells.extend([
            str_at(event, "/involvedObject/fieldPath").to_string(),
            source,
            message,
            stamp(first),
            count.to_string(),
            name_of(event),
        ]);
    } else {
        cells.push(message);
    }
    cells
}

fn role_row(obj: &Value, _wide: bool, _now: Timestamp) -> Vec<String> {
    let created = time_at(obj, "/metadata/creationTimestamp")
        .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339);
    vec![name_of(obj), created]
}

fn role_binding_row(obj: &Value, wide: bool, now: Timestamp) -> Vec<String> {
    let mut cells = vec![
        name_of(obj),
        format!(
            "{}/{}",
            str_at(obj, "/roleRef/kind"),
            str_at(obj, "/roleRef/name")
        ),
        age_of(obj, now),
    ];
    if wide {
        let subjects = array_at(obj, "/subjects");
        let of_kind = |kind: &str| {
            subjects
                .iter()
                .filter(|s| str_at(s, "/kind") == kind)
                .map(|s| match kind {
                    "ServiceAccount" => {
                        format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"))
                    }
                    _ => str_at(s, "/name").to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        cells.extend([of_kind("User"), of_kind("Group"), of_kind("ServiceAccount")]);
    }
    cells
}

// ---------------------------------------------------------------------------------------
// Describe
// ---------------------------------------------------------------------------------------

/// Text being built for `describe`: lines of tab-separated cells, aligned at the end.
#[derive(Default)]
struct Doc {
    text: String,
}

impl Doc {
    /// One line at an indentation level (two spaces each), cells separated by tabs.
    fn line(&mut self, level: usize, cells: &[&str]) {
        for _ in 0..level {
            self.text.push_str("  ");
        }
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                self.text.push('\t');
            }
            self.text.push_str(&one_line(cell));
        }
        self.text.push('\n');
    }

    /// "Label:" and its value, aligned with neighbouring fields.
    fn field(&mut self, level: usize, label: &str, value: &str) {
        self.line(level, &[&format!("{label}:"), value]);
    }

    /// "Label:" and its value, left out when the value is empty.
    fn field_if_set(&mut self, level: usize, label: &str, value: &str) {
        if !value.is_empty() {
            self.field(level, label, value);
        }
    }

    /// "Label:" and the items joined by `separator`, left out when there are none.
    fn joined_if_any(&mut self, level: usize, label: &str, items: &[String], separator: &str) {
        if !items.is_empty() {
            self.field(level, label, &items.join(separator));
        }
    }

    /// "Label:" alone, opening a nested section.
    fn heading(&mut self, level: usize, label: &str) {
        self.line(level, &[&format!("{label}:")]);
    }

    /// "Label:" with one item per line, or `<none>`.
    fn items(&mut self, level: usize, label: &str, items: &[String]) {
        match items.split_first() {
            None => self.field(level, label, "<none>"),
            Some((first, rest)) => {
                self.field(level, label, first);
                for item in rest {
                    self.line(level, &["", item]);
                }
            }
        }
    }

    fn blank(&mut self) {
        self.text.push('\n');
    }

    fn finish(self) -> String {
        let lines: Vec<Vec<&str>> = self
            .text
            .lines()
            .map(|line| line.split('\t').collect())
            .collect();
        align(&lines, 0, DESCRIBE_PADDING)
    }
}

/// Name, Namespace (when there is one), Labels and Annotations.
fn describe_meta(doc: &mut Doc, obj: &Value) {
    doc.field(0, "Name", str_at(obj, "/metadata/name"));
    if let Some(ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        doc.field(0, "Namespace", ns);
    }
    describe_labels_and_annotations(doc, 0, obj);
}

fn describe_labels_and_annotations(doc: &mut Doc, level: usize, obj: &Value) {
    doc.items(
        level,
        "Labels",
        &label_lines(obj.pointer("/metadata/labels")),
    );
    let annotations: Vec<String> = obj
        .pointer("/metadata/annotations")
        .map(entries)
        .into_iter()
        .flatten()
        .filter(|(key, _)| *key != LAST_APPLIED)
        .map(|(key, value)| {
            let value = scalar(value);
            if value.chars().count() > MAX_ANNOTATION_LEN {
                let cut: String = value.chars().take(MAX_ANNOTATION_LEN).collect();
                format!("{key}: {cut}...")
            } else {
                format!("{key}: {value}")
            }
        })
        .collect();
    doc.items(level, "Annotations", &annotations);
}

fn label_lines(labels: Option<&Value>) -> Vec<String> {
    labels
        .map(entries)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", scalar(v)))
        .collect()
}

fn describe_pod(doc: &mut Doc, pod: &Value, now: Timestamp) {
    doc.field(0, "Name", str_at(pod, "/metadata/name"));
    doc.field(0, "Namespace", str_at(pod, "/metadata/namespace"));
    if let Some(priority) = pod.pointer("/spec/priority").filter(|p| !p.is_null()) {
        doc.field(0, "Priority", &scalar(priority));
    }
    doc.field_if_set(
        0,
        "Priority Class Name",
        str_at(pod, "/spec/priorityClassName"),
    );
    doc.field(
        0,
        "Service Account",
        str_at(pod, "/spec/serviceAccountName"),
    );
    let node = match (str_at(pod, "/spec/nodeName"), str_at(pod, "/status/hostIP")) {
        ("", _) => "<none>".to_string(),
        (node, "") => node.to_string(),
        (node, host_ip) => format!("{node}/{host_ip}"),
    };
    doc.field(0, "Node", &node);
    if let Some(start) = time_at(pod, "/status/startTime") {
        doc.field(0, "Start Time", &rfc1123(start));
    }
    describe_labels_and_annotations(doc, 0, pod);
    match time_at(pod, "/metadata/deletionTimestamp") {
        Some(deletion) => {
            let lasts = since(deletion.min(now), deletion.max(now));
            doc.field(0, "Status", &format!("Terminating (lasts {lasts})"));
            if let Some(grace) = pod.pointer("/metadata/deletionGracePeriodSeconds") {
                doc.field(
                    0,
                    "Termination Grace Period",
                    &format!("{}s", as_int(grace)),
                );
            }
        }
        None => doc.field(
            0,
            "Status",
            or_default(str_at(pod, "/status/phase"), "Pending"),
        ),
    }
    for (label, field) in [("Reason", "/status/reason"), ("Message", "/status/message")] {
        doc.field_if_set(0, label, str_at(pod, field));
    }
    doc.field(0, "IP", str_at(pod, "/status/podIP"));
    let ips = array_at(pod, "/status/podIPs");
    if ips.is_empty() {
        doc.field(0, "IPs", "<none>");
    } else {
        doc.heading(0, "IPs");
        for ip in ips {
            doc.field(1, "IP", str_at(ip, "/ip"));
        }
    }
    if let Some(owner) = controller_of(pod) {
        doc.field(0, "Controlled By", &owner);
    }
    doc.field_if_set(
        0,
        "NominatedNodeName",
        str_at(pod, "/status/nominatedNodeName"),
    );

    let init = array_at(pod, "/spec/initContainers");
    if !init.is_empty() {
        doc.heading(0, "Init Containers");
        for c in init {
            let status = container_status(pod, "/status/initContainerStatuses", c);
            describe_container(doc, 1, "", c, status, now);
        }
    }
    let containers = array_at(pod, "/spec/containers");
    if containers.is_empty() {
        doc.field(0, "Containers", "<none>");
    } else {
        doc.heading(0, "Containers");
        for c in containers {
            let status = container_status(pod, "/status/containerStatuses", c);
            describe_container(doc, 1, "", c, status, now);
        }
    }

    let conditions = array_at(pod, "/status/conditions");
    if !conditions.is_empty() {
        doc.heading(0, "Conditions");
        doc.line(1, &["Type", "Status"]);
        for c in conditions {
            doc.line(1, &[str_at(c, "/type"), str_at(c, "/status")]);
        }
    }
    describe_volumes(doc, 0, array_at(pod, "/spec/volumes"));
    doc.field_if_set(0, "QoS Class", str_at(pod, "/status/qosClass"));
    doc.field(
        0,
        "Node-Selectors",
        &format_labels(pod.pointer("/spec/nodeSelector")),
    );
    let tolerations: Vec<String> = array_at(pod, "/spec/tolerations")
        .iter()
        .map(format_toleration)
        .collect();
    doc.items(0, "Tolerations", &tolerations);
}

/// The status reported for the container described by `spec`, matched by name.
fn container_status<'a>(pod: &'a Value, field: &str, spec: &Value) -> Option<&'a Value> {
    let name = str_at(spec, "/name");
    array_at(pod, field)
        .iter()
        .find(|s| str_at(s, "/name") == name)
}

/// `Kind/name` of the owner reference marked as controller.
fn controller_of(obj: &Value) -> Option<String> {
    array_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| bool_at(r, "/controller"))
        .map(|r| format!("{}/{}", str_at(r, "/kind"), str_at(r, "/name")))
}

/// One container's block; `status` is `None` in templates.
fn describe_container(
    doc: &mut Doc,
    level: usize,
    name_indent: &str,
    spec: &Value,
    status: Option<&Value>,
    now: Timestamp,
) {
    let fields = level + 1;
    doc.line(
        level,
        &[&format!("{name_indent}{}:", str_at(spec, "/name"))],
    );
    if let Some(id) = status
        .map(|s| str_at(s, "/containerID"))
        .filter(|i| !i.is_empty())
    {
        doc.field(fields, "Container ID", id);
    }
    doc.field(fields, "Image", str_at(spec, "/image"));
    if let Some(id) = status
        .map(|s| str_at(s, "/imageID"))
        .filter(|i| !i.is_empty())
    {
        doc.field(fields, "Image ID", id);
    }
    let ports = array_at(spec, "/ports");
    let port_list = |field: &str| {
        ports
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    int_at(p, field),
                    or_default(str_at(p, "/protocol"), "TCP")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (port_label, host_label) = if ports.len() > 1 {
        ("Ports", "Host Ports")
    } else {
        ("Port", "Host Port")
    };
    doc.field(fields, port_label, &or_none(&port_list("/containerPort")));
    doc.field(fields, host_label, &or_none(&port_list("/hostPort")));
    for (label, field) in [("Command", "/command"), ("Args", "/args")] {
        let words = array_at(spec, field);
        if !words.is_empty() {
            doc.heading(fields, label);
            for word in words {
                doc.line(fields + 1, &[&scalar(word)]);
            }
        }
    }
    if let Some(status) = status {
        describe_container_state(doc, fields, "State", status.pointer("/state"), now);
        if let Some(last) = status
            .pointer("/lastState")
            .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        {
            describe_container_state(doc, fields, "Last State", Some(last), now);
        }
        doc.field(
            fields,
            "Ready",
            if bool_at(status, "/ready") {
                "True"
            } else {
                "False"
            },
        );
        doc.field(
            fields,
            "Restart Count",
            &int_at(status, "/restartCount").to_string(),
        );
    }
    for (label, field) in [
        ("Limits", "/resources/limits"),
        ("Requests", "/resources/requests"),
    ] {
        let resources = spec.pointer(field).map(entries).unwrap_or_default();
        if !resources.is_empty() {
            doc.heading(fields, label);
            for (resource, quantity) in resources {
                doc.field(fields + 1, resource, &scalar(quantity));
            }
        }
    }
    for (label, field) in [
        ("Liveness", "/livenessProbe"),
        ("Readiness", "/readinessProbe"),
        ("Startup", "/startupProbe"),
    ] {
        if let Some(probe) = spec.pointer(field).filter(|p| p.is_object()) {
            doc.field(fields, label, &format_probe(probe));
        }
    }
    let env_from = array_at(spec, "/envFrom");
    if !env_from.is_empty() {
        doc.heading(fields, "Environment Variables from");
        for source in env_from {
            let (kind, reference) = if let Some(r) = source.pointer("/configMapRef") {
                ("ConfigMap", r)
            } else if let Some(r) = source.pointer("/secretRef") {
                ("Secret", r)
            } else {
                continue;
            };
            let prefix = match str_at(source, "/prefix") {
                "" => String::new(),
                p => format!(" with prefix '{p}'"),
            };
            doc.line(
                fields + 1,
                &[
                    &format!("{}{prefix}", str_at(reference, "/name")),
                    kind,
                    &format!("Optional: {}", bool_at(reference, "/optional")),
                ],
            );
        }
    }
    let env = array_at(spec, "/env");
    if env.is_empty() {
        doc.field(fields, "Environment", "<none>");
    } else {
        doc.heading(fields, "Environment");
        for var in env {
            doc.field(fields + 1, str_at(var, "/name"), &format_env_value(var));
        }
    }
    let mounts: Vec<String> = array_at(spec, "/volumeMounts")
        .iter()
        .map(|m| {
            let mut flags = vec![if bool_at(m, "/readOnly") { "ro" } else { "rw" }.to_string()];
            let sub_path = str_at(m, "/subPath");
            if !sub_path.is_empty() {
                flags.push(format!("path=\"{sub_path}\""));
            }
            format!(
                "{} from {} ({})",
                str_at(m, "/mountPath"),
                str_at(m, "/name"),
                flags.join(",")
            )
        })
        .collect();
    if mounts.is_empty() {
        doc.field(fields, "Mounts", "<none>");
    } else {
        doc.heading(fields, "Mounts");
        for mount in &mounts {
            doc.line(fields + 1, &[mount]);
        }
    }
}

fn describe_container_state(
    doc: &mut Doc,
    level: usize,
    label: &str,
    state: Option<&Value>,
    now: Timestamp,
) {
    let state = state.unwrap_or(&Value::Null);
    let stamp = |field: &str| time_at(state, field).map(rfc1123);
    if let Some(running) = state.pointer("/running").filter(|s| s.is_object()) {
        doc.field(level, label, "Running");
        if let Some(started) = time_at(running, "/startedAt") {
            doc.field(level + 1, "Started", &rfc1123(started));
        }
    } else if let Some(terminated) = state.pointer("/terminated").filter(|s| s.is_object()) {
        doc.field(level, label, "Terminated");
        for (name, field) in [("Reason", "/reason"), ("Message", "/message")] {
            doc.field_if_set(level + 1, name, str_at(terminated, field));
        }
        doc.field(
            level + 1,
            "Exit Code",
            &int_at(terminated, "/exitCode").to_string(),
        );
        if int_at(terminated, "/signal") != 0 {
            doc.field(
                level + 1,
                "Signal",
                &int_at(terminated, "/signal").to_string(),
            );
        }
        if let Some(started) = stamp("/terminated/startedAt") {
            doc.field(level + 1, "Started", &started);
        }
        if let Some(finished) = time_at(terminated, "/finishedAt") {
            let ago = since(finished, now);
            doc.field(
                level + 1,
                "Finished",
                &format!("{} ({ago} ago)", rfc1123(finished)),
            );
        }
    } else {
        doc.field(level, label, "Waiting");
        for (name, field) in [
            ("Reason", "/waiting/reason"),
            ("Message", "/waiting/message"),
        ] {
            doc.field_if_set(level + 1, name, str_at(state, field));
        }
    }
}

fn format_probe(probe: &Value) -> String {
    let action = if let Some(http) = probe.pointer("/httpGet").filter(|h| h.is_object()) {
        format!(
            "http-get {}://{}:{}{}",
            or_default(str_at(http, "/scheme"), "HTTP").to_lowercase(),
            str_at(http, "/host"),
            scalar_at(http, "/port"),
            str_at(http, "/path")
        )
    } else if let Some(tcp) = probe.pointer("/tcpSocket").filter(|t| t.is_object()) {
        format!(
            "tcp-socket {}:{}",
            str_at(tcp, "/host"),
            scalar_at(tcp, "/port")
        )
    } else if let Some(grpc) = probe.pointer("/grpc").filter(|g| g.is_object()) {
        format!(
            "grpc <pod>:{} {}",
            scalar_at(grpc, "/port"),
            or_default(str_at(grpc, "/service"), "<service>")
        )
    } else if let Some(exec) = probe.pointer("/exec").filter(|e| e.is_object()) {
        let words = scalars_at(exec, "/command");
        format!("exec [{}]", words.join(" "))
    } else {
        "unknown".to_string()
    };
    let or = |field: &str, default: i64| match probe.pointer(field) {
        Some(v) if !v.is_null() => as_int(v),
        _ => default,
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        or("/initialDelaySeconds", 0),
        or("/timeoutSeconds", 1),
        or("/periodSeconds", 10),
        or("/successThreshold", 1),
        or("/failureThreshold", 3)
    )
}

fn format_env_value(var: &Value) -> String {
    if let Some(value) = var.pointer("/value") {
        return scalar(value);
    }
    let Some(from) = var.pointer("/valueFrom") else {
        return String::new();
    };
    if let Some(field) = from.pointer("/fieldRef") {
        format!(
            " ({}:{})",
            or_default(str_at(field, "/apiVersion"), "v1"),
            str_at(field, "/fieldPath")
        )
    } else if let Some(resource) = from.pointer("/resourceFieldRef") {
        format!(
            "{} ({})",
            or_default(str_at(resource, "/containerName"), "<container>"),
            str_at(resource, "/resource")
        )
    } else if let Some(key) = from.pointer("/secretKeyRef") {
        format!(
            "<set to the key '{}' in secret '{}'>  Optional: {}",
            str_at(key, "/key"),
            str_at(key, "/name"),
            bool_at(key, "/optional")
        )
    } else if let Some(key) = from.pointer("/configMapKeyRef") {
        format!(
            "<set to the key '{}' of config map '{}'>  Optional: {}",
            str_at(key, "/key"),
            str_at(key, "/name"),
            bool_at(key, "/optional")
        )
    } else {
        String::new()
    }
}

fn format_toleration(toleration: &Value) -> String {
    let key = str_at(toleration, "/key");
    let value = str_at(toleration, "/value");
    let effect = str_at(toleration, "/effect");
    let mut text = key.to_string();
    if !value.is_empty() {
        let _ = write!(text, "={value}");
    }
    if !effect.is_empty() {
        let _ = write!(text, ":{effect}");
    }
    // "Exists" with no key and no effect tolerates every taint.
    if str_at(toleration, "/operator") == "Exists" && value.is_empty() {
        if text.is_empty() {
            text.push_str("op=Exists");
        } else {
            text.push_str(" op=Exists");
        }
    }
    if let Some(seconds) = toleration
        .pointer("/tolerationSeconds")
        .filter(|s| !s.is_null())
    {
        let _ = write!(text, " for {}s", as_int(seconds));
    }
    text
}

fn describe_volumes(doc: &mut Doc, level: usize, volumes: &[Value]) {
    if volumes.is_empty() {
        doc.field(level, "Volumes", "<none>");
        return;
    }
    doc.heading(level, "Volumes");
    let fields = level + 2;
    for volume in volumes {
        doc.heading(level + 1, str_at(volume, "/name"));
        let source = volume
            .as_object()
            .and_then(|m| m.iter().find(|(key, _)| key.as_str() != "name"));
        let Some((kind, source)) = source else {
            doc.field(fields, "Type", "<unknown>");
            continue;
        };
        match kind.as_str() {
            "emptyDir" => {
                doc.field(
                    fields,
                    "Type",
                    "EmptyDir (a temporary directory that shares a pod's lifetime)",
                );
                doc.field(fields, "Medium", str_at(source, "/medium"));
                doc.field(
                    fields,
                    "SizeLimit",
                    or_default(&scalar_at(source, "/sizeLimit"), "<unset>"),
                );
            }
            "hostPath" => {
                doc.field(fields, "Type", "HostPath (bare host directory volume)");
                doc.field(fields, "Path", str_at(source, "/path"));
                doc.field(fields, "HostPathType", str_at(source, "/type"));
            }
            "configMap" => {
                doc.field(
                    fields,
                    "Type",
                    "ConfigMap (a volume populated by a ConfigMap)",
                );
                doc.field(fields, "Name", str_at(source, "/name"));
                doc.field(
                    fields,
                    "Optional",
                    &bool_at(source, "/optional").to_string(),
                );
            }
            "secret" => {
                doc.field(fields, "Type", "Secret (a volume populated by a Secret)");
                doc.field(fields, "SecretName", str_at(source, "/secretName"));
                doc.field(
                    fields,
                    "Optional",
                    &bool_at(source, "/optional").to_string(),
                );
            }
            "persistentVolumeClaim" => {
                doc.field(
                    fields,
                    "Type",
                    "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
                );
                doc.field(fields, "ClaimName", str_at(source, "/claimName"));
                doc.field(
                    fields,
                    "ReadOnly",
                    &bool_at(source, "/readOnly").to_string(),
                );
            }
            "projected" => {
                doc.field(
                    fields,
                    "Type",
                    "Projected (a volume that contains injected data from multiple sources)",
                );
                for part in array_at(source, "/sources") {
                    if let Some(token) = part.pointer("/serviceAccountToken") {
                        doc.field(
                            fields,
                            "TokenExpirationSeconds",
                            or_default(&scalar_at(token, "/expirationSeconds"), "3600"),
                        );
                    }
                    if let Some(map) = part.pointer("/configMap") {
                        doc.field(fields, "ConfigMapName", str_at(map, "/name"));
                    }
                    if let Some(secret) = part.pointer("/secret") {
                        doc.field(fields, "SecretName", str_at(secret, "/name"));
                    }
                    if part.pointer("/downwardAPI").is_some() {
                        doc.field(fields, "DownwardAPI", "true");
                    }
                }
            }
            other => {
                doc.field(fields, "Type", other);
                if let Some(source) = source.as_object() {
                    describe_map(doc, fields, source);
                }
            }
        }
    }
}

fn describe_deployment(doc: &mut Doc, obj: &Value, now: Timestamp) {
    doc.field(0, "Name", str_at(obj, "/metadata/name"));
    doc.field(0, "Namespace", str_at(obj, "/metadata/namespace"));
    if let Some(created) = time_at(obj, "/metadata/creationTimestamp") {
        doc.field(0, "CreationTimestamp", &rfc1123(created));
    }
    describe_labels_and_annotations(doc, 0, obj);
    doc.field(
        0,
        "Selector",
        &selector_string(obj.pointer("/spec/selector")),
    );
    doc.field(
        0,
        "Replicas",
        &format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            desired_replicas(obj),
            int_at(obj, "/status/updatedReplicas"),
            int_at(obj, "/status/replicas"),
            int_at(obj, "/status/availableReplicas"),
            int_at(obj, "/status/unavailableReplicas"),
        ),
    );
    let strategy = or_default(str_at(obj, "/spec/strategy/type"), "RollingUpdate");
    doc.field(0, "StrategyType", strategy);
    doc.field(
        0,
        "MinReadySeconds",
        &int_at(obj, "/spec/minReadySeconds").to_string(),
    );
    if strategy == "RollingUpdate" {
        let limit = |field: &str| or_default(&scalar_at(obj, field), "25%").to_string();
        doc.field(
            0,
            "RollingUpdateStrategy",
            &format!(
                "{} max unavailable, {} max surge",
                limit("/spec/strategy/rollingUpdate/maxUnavailable"),
                limit("/spec/strategy/rollingUpdate/maxSurge")
            ),
        );
    }
    describe_pod_template(
        doc,
        obj.pointer("/spec/template").unwrap_or(&Value::Null),
        now,
    );
    let conditions = array_at(obj, "/status/conditions");
    if !conditions.is_empty() {
        doc.heading(0, "Conditions");
        doc.line(1, &["Type", "Status", "Reason"]);
        doc.line(1, &["----", "------", "------"]);
        for c in conditions {
            doc.line(
                1,
                &[
                    str_at(c, "/type"),
                    str_at(c, "/status"),
                    str_at(c, "/reason"),
                ],
            );
        }
    }
}

fn describe_pod_template(doc: &mut Doc, template: &Value, now: Timestamp) {
    doc.heading(0, "Pod Template");
    doc.items(
        1,
        "Labels",
        &label_lines(template.pointer("/metadata/labels")),
    );
    doc.field_if_set(
        1,
        "Service Account",
        str_at(template, "/spec/serviceAccountName"),
    );
    for (label, field) in [
        ("Init Containers", "/spec/initContainers"),
        ("Containers", "/spec/containers"),
    ] {
        let containers = array_at(template, field);
        if containers.is_empty() {
            if field == "/spec/containers" {
                doc.field(1, label, "<none>");
            }
            continue;
        }
        doc.heading(1, label);
        for c in containers {
            describe_container(doc, 1, " ", c, None, now);
        }
    }
    describe_volumes(doc, 1, array_at(template, "/spec/volumes"));
}

fn describe_service(doc: &mut Doc, svc: &Value) {
    describe_meta(doc, svc);
    doc.field(0, "Selector", &format_labels(svc.pointer("/spec/selector")));
    doc.field(0, "Type", service_type(svc));
    doc.field_if_set(0, "IP Family Policy", str_at(svc, "/spec/ipFamilyPolicy"));
    doc.joined_if_any(0, "IP Families", &scalars_at(svc, "/spec/ipFamilies"), ",");
    doc.field(0, "IP", &or_none(str_at(svc, "/spec/clusterIP")));
    doc.joined_if_any(0, "IPs", &scalars_at(svc, "/spec/clusterIPs"), ",");
    doc.joined_if_any(
        0,
        "External IPs",
        &scalars_at(svc, "/spec/externalIPs"),
        ",",
    );
    let ingress: Vec<String> = array_at(svc, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| or_default(str_at(i, "/ip"), str_at(i, "/hostname")).to_string())
        .filter(|a| !a.is_empty())
        .collect();
    doc.joined_if_any(0, "LoadBalancer Ingress", &ingress, ", ");
    doc.field_if_set(0, "External Name", str_at(svc, "/spec/externalName"));
    for port in array_at(svc, "/spec/ports") {
        let name = or_default(str_at(port, "/name"), "<unset>");
        let protocol = or_default(str_at(port, "/protocol"), "TCP");
        doc.line(
            0,
            &[
                "Port:",
                name,
                &format!("{}/{protocol}", int_at(port, "/port")),
            ],
        );
        let target = match scalar_at(port, "/targetPort") {
            t if t.is_empty() => int_at(port, "/port").to_string(),
            t => t,
        };
        doc.field(0, "TargetPort", &format!("{target}/{protocol}"));
        let node_port = int_at(port, "/nodePort");
        if node_port != 0 {
            doc.line(0, &["NodePort:", name, &format!("{node_port}/{protocol}")]);
        }
    }
    doc.field(
        0,
        "Session Affinity",
        or_default(str_at(svc, "/spec/sessionAffinity"), "None"),
    );
    doc.field_if_set(
        0,
        "External Traffic Policy",
        str_at(svc, "/spec/externalTrafficPolicy"),
    );
    doc.field_if_set(
        0,
        "Internal Traffic Policy",
        str_at(svc, "/spec/internalTrafficPolicy"),
    );
}

fn describe_node(doc: &mut Doc, node: &Value) {
    doc.field(0, "Name", str_at(node, "/metadata/name"));
    doc.field(0, "Roles", &or_none(&node_roles(node).join(",")));
    describe_labels_and_annotations(doc, 0, node);
    if let Some(created) = time_at(node, "/metadata/creationTimestamp") {
        doc.field(0, "CreationTimestamp", &rfc1123(created));
    }
    let taints: Vec<String> = array_at(node, "/spec/taints")
        .iter()
        .map(|t| {
            let mut text = str_at(t, "/key").to_string();
            let value = str_at(t, "/value");
            if !value.is_empty() {
                let _ = write!(text, "={value}");
            }
            let _ = write!(text, ":{}", str_at(t, "/effect"));
            text
        })
        .collect();
    doc.items(0, "Taints", &taints);
    doc.field(
        0,
        "Unschedulable",
        &bool_at(node, "/spec/unschedulable").to_string(),
    );
    let conditions = array_at(node, "/status/conditions");
    if conditions.is_empty() {
        doc.field(0, "Conditions", "<none>");
    } else {
        doc.heading(0, "Conditions");
        doc.line(
            1,
            &[
                "Type",
                "Status",
                "LastHeartbeatTime",
                "LastTransitionTime",
                "Reason",
                "Message",
            ],
        );
        doc.line(
            1,
            &[
                "----",
                "------",
                "-----------------",
                "------------------",
                "------",
                "-------",
            ],
        );
        for c in conditions {
            let stamp = |field: &str| time_at(c, field).map(rfc1123).unwrap_or_default();
            doc.line(
                1,
                &[
                    str_at(c, "/type"),
                    str_at(c, "/status"),
                    &stamp("/lastHeartbeatTime"),
                    &stamp("/lastTransitionTime"),
                    str_at(c, "/reason"),
                    str_at(c, "/message"),
                ],
            );
        }
    }
    let addresses = array_at(node, "/status/addresses");
    if addresses.is_empty() {
        doc.field(0, "Addresses", "<none>");
    } else {
        doc.heading(0, "Addresses");
        for a in addresses {
            doc.field(1, str_at(a, "/type"), str_at(a, "/address"));
        }
    }
    for (label, field) in [
        ("Capacity", "/status/capacity"),
        ("Allocatable", "/status/allocatable"),
    ] {
        if let Some(resources) = node.pointer(field).filter(|r| r.is_object()).map(entries) {
            doc.heading(0, label);
            for (resource, quantity) in resources {
                doc.field(1, resource, &scalar(quantity));
            }
        }
    }
    if let Some(info) = node.pointer("/status/nodeInfo").filter(|i| i.is_object()) {
        doc.heading(0, "System Info");
        for (label, field) in [
            ("Machine ID", "/machineID"),
            ("System UUID", "/systemUUID"),
            ("Boot ID", "/bootID"),
            ("Kernel Version", "/kernelVersion"),
            ("OS Image", "/osImage"),
            ("Operating System", "/operatingSystem"),
            ("Architecture", "/architecture"),
            ("Container Runtime Version", "/containerRuntimeVersion"),
            ("Kubelet Version", "/kubeletVersion"),
            ("Kube-Proxy Version", "/kubeProxyVersion"),
        ] {
            doc.field(1, label, str_at(info, field));
        }
    }
    doc.field_if_set(0, "PodCIDR", str_at(node, "/spec/podCIDR"));
    doc.joined_if_any(0, "PodCIDRs", &scalars_at(node, "/spec/podCIDRs"), ",");
    doc.field_if_set(0, "ProviderID", str_at(node, "/spec/providerID"));
}

fn describe_config_map(doc: &mut Doc, obj: &Value) {
    describe_meta(doc, obj);
    doc.blank();
    doc.line(0, &["Data"]);
    doc.line(0, &["===="]);
    for (key, value) in obj.pointer("/data").map(entries).into_iter().flatten() {
        doc.line(0, &[&format!("{key}:")]);
        doc.line(0, &["----"]);
        for text in scalar(value).lines() {
            doc.line(0, &[text]);
        }
        doc.blank();
    }
    doc.blank();
    doc.line(0, &["BinaryData"]);
    doc.line(0, &["===="]);
    for (key, value) in obj
        .pointer("/binaryData")
        .map(entries)
        .into_iter()
        .flatten()
    {
        doc.field(0, key, &format!("{} bytes", base64_len(&scalar(value))));
    }
    doc.blank();
}

fn describe_secret(doc: &mut Doc, obj: &Value) {
    describe_meta(doc, obj);
    doc.blank();
    doc.field(0, "Type", or_default(str_at(obj, "/type"), "Opaque"));
    doc.blank();
    doc.line(0, &["Data"]);
    doc.line(0, &["===="]);
    // Values are never printed, only their sizes: that is the point of a Secret.
    for key in secret_keys(obj) {
        let size = match obj.pointer(&format!("/data/{}", pointer_escape(key))) {
            Some(encoded) => base64_len(&scalar(encoded)),
            None => obj
                .pointer(&format!("/stringData/{}", pointer_escape(key)))
                .map_or(0, |v| scalar(v).len()),
        };
        doc.field(0, key, &format!("{size} bytes"));
    }
    doc.blank();
}

/// Any other kind: its metadata, then every other top-level field ("Spec", "Status",
/// "Rules", ...) as indented key: value lines.
fn describe_generic(doc: &mut Doc, obj: &Value) {
    describe_meta(doc, obj);
    if let Some(owner) = controller_of(obj) {
        doc.field(0, "Controlled By", &owner);
    }
    if let Some(fields) = obj.as_object() {
        let rest: Map<String, Value> = fields
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        describe_map(doc, 0, &rest);
    }
}

fn describe_map(doc: &mut Doc, level: usize, map: &Map<String, Value>) {
    let mut fields: Vec<(&String, &Value)> = map.iter().collect();
    fields.sort_by_key(|(key, _)| *key);
    for (key, value) in fields {
        describe_value(doc, level, &smart_label(key), value);
    }
}

fn describe_value(doc: &mut Doc, level: usize, label: &str, value: &Value) {
    match value {
        Value::Object(map) if map.is_empty() => doc.field(level, label, "<none>"),
        Value::Object(map) => {
            doc.heading(level, label);
            describe_map(doc, level + 1, map);
        }
        Value::Array(items) if items.is_empty() => doc.field(level, label, "<none>"),
        Value::Array(items) => {
            doc.heading(level, label);
            for item in items {
                match item {
                    Value::Object(map) => describe_map(doc, level + 1, map),
                    other => doc.line(level + 1, &[&scalar(other)]),
                }
            }
        }
        other => doc.field(level, label, &scalar(other)),
    }
}

/// "maxSurge" -> "Max Surge", "podIPs" -> "Pod IPs"; keys that are not plain identifiers
/// (label keys, resource names) stay as they are.
fn smart_label(key: &str) -> String {
    const ACRONYMS: &[&str] = &[
        "api", "cidr", "cpu", "dns", "http", "https", "id", "ip", "tcp", "tls", "udp", "uid",
        "url", "uuid",
    ];
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return key.to_string();
    }
    let mut words: Vec<String> = Vec::new();
    let chars: Vec<char> = key.chars().collect();
    let mut word = String::new();
    for (index, &c) in chars.iter().enumerate() {
        let prev = index.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(index + 1);
        // A new word starts at lower->Upper, or at the last capital of a run ("IPFamily").
        // A lone trailing "s" is a plural ("podIPs"), not a word.
        let plural =
            next == Some(&'s') && chars.get(index + 2).is_none_or(|n| !n.is_ascii_lowercase());
        let boundary = c.is_ascii_uppercase()
            && prev.is_some_and(|p| {
                p.is_ascii_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_ascii_uppercase()
                        && !plural
                        && next.is_some_and(|n| n.is_ascii_lowercase()))
            });
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.push(c);
    }
    words.push(word);
    words
        .iter()
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if ACRONYMS.contains(&lower.as_str()) {
                lower.to_ascii_uppercase()
            } else if lower.ends_with('s') && ACRONYMS.contains(&&lower[..lower.len() - 1]) {
                format!("{}s", lower[..lower.len() - 1].to_ascii_uppercase())
            } else {
                let mut chars = w.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// When an event was last seen, for ordering and its Age column.
fn event_last_seen(event: &Value) -> Option<Timestamp> {
    time_at(event, "/series/lastObservedTime")
        .or_else(|| time_at(event, "/lastTimestamp"))
        .or_else(|| event_first_seen(event))
}

fn describe_events(doc: &mut Doc, events: &[Value], now: Timestamp) {
    if events.is_empty() {
        doc.field(0, "Events", "<none>");
        return;
    }
    let mut ordered: Vec<&Value> = events.iter().collect();
    ordered.sort_by_key(|e| event_last_seen(e));
    doc.heading(0, "Events");
    doc.line(1, &["Type", "Reason", "Age", "From", "Message"]);
    doc.line(1, &["----", "------", "----", "----", "-------"]);
    for event in ordered {
        let stamp =
            |t: Option<Timestamp>| t.map_or_else(|| "<unknown>".to_string(), |t| since(t, now));
        let first = stamp(event_first_seen(event));
        let count = if event.pointer("/series").is_some_and(Value::is_object) {
            int_at(event, "/series/count")
        } else {
            int_at(event, "/count")
        };
        let interval = if count > 1 {
            format!("{} (x{count} over {first})", stamp(event_last_seen(event)))
        } else {
            first
        };
        let from = or_default(
            str_at(event, "/source/component"),
            str_at(event, "/reportingController"),
        );
        doc.line(
            1,
            &[
                str_at(event, "/type"),
                str_at(event, "/reason"),
                &interval,
                from,
                str_at(event, "/message").trim(),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------

/// Aligns cells into columns the way Go's tab writer (which kubectl uses) does: a column
/// is the run of consecutive lines that have a cell at that index followed by another
/// cell; its width is the widest such cell plus `padding` (at least `min_width`). The last
/// cell of each line is not padded, and no line keeps trailing spaces.
fn align(lines: &[Vec<&str>], min_width: usize, padding: usize) -> String {
    let mut out = String::new();
    let mut widths = Vec::new();
    align_block(lines, &mut widths, min_width, padding, &mut out);
    out
}

fn align_block(
    lines: &[Vec<&str>],
    widths: &mut Vec<usize>,
    min_width: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let has_column = |line: &Vec<&str>| line.len() > column + 1;
    let mut printed = 0;
    let mut this = 0;
    while this < lines.len() {
        if !has_column(&lines[this]) {
            this += 1;
            continue;
        }
        write_lines(&lines[printed..this], widths, out);
        let start = this;
        let mut width = min_width;
        while this < lines.len() && has_column(&lines[this]) {
            width = width.max(lines[this][column].chars().count() + padding);
            this += 1;
        }
        widths.push(width);
        align_block(&lines[start..this], widths, min_width, padding, out);
        widths.pop();
        printed = this;
    }
    write_lines(&lines[printed..], widths, out);
}

fn write_lines(lines: &[Vec<&str>], widths: &[usize], out: &mut String) {
    for line in lines {
        let start = out.len();
        for (index, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(width) = widths.get(index) {
                let pad = width.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let kept = out[start..].trim_end_matches(' ').len();
        out.truncate(start + kept);
        out.push('\n');
    }
}

// ---------------------------------------------------------------------------------------
// Values, times and small formats
// ---------------------------------------------------------------------------------------

/// Tabs and line breaks inside a cell would break the layout: make them spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if matches!(c, '\t' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).map_or(0, as_int)
}

fn as_int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The scalars of an array, as kubectl prints them; none if not an array.
fn scalars_at(v: &Value, pointer: &str) -> Vec<String> {
    array_at(v, pointer).iter().map(scalar).collect()
}

fn bool_at(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An object's fields sorted by key (whatever order serde_json keeps); none if not an object.
fn entries(v: &Value) -> Vec<(&str, &Value)> {
    let mut fields: Vec<(&str, &Value)> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    fields.sort_by_key(|(key, _)| *key);
    fields
}

fn map_len(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn time_at(v: &Value, pointer: &str) -> Option<Timestamp> {
    parse_time(str_at(v, pointer))
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// A scalar as kubectl prints it; strings without quotes, null as nothing.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        other => other.to_string(),
    }
}

fn scalar_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).map(scalar).unwrap_or_default()
}

fn or_none(text: &str) -> String {
    or_default(text, "<none>").to_string()
}

fn or_default<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.is_empty() {
        default
    } else {
        text
    }
}

/// A later of two optional times, for "last restarted" bookkeeping.
fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn condition_is_true(obj: &Value, kind: &str) -> bool {
    array_at(obj, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

/// `k=v` pairs, sorted by key, comma-joined; `<none>` when there are none.
fn format_labels(labels: Option<&Value>) -> String {
    or_none(&label_lines(labels).join(","))
}

/// A label selector in kubectl's syntax (`app=web,tier in (a,b),!legacy`), requirements
/// sorted by key; empty when the selector selects everything or is missing.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = selector
        .pointer("/matchLabels")
        .map(entries)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), format!("{k}={}", scalar(v))))
        .collect();
    for expression in array_at(selector, "/matchExpressions") {
        let key = str_at(expression, "/key");
        let mut values = scalars_at(expression, "/values");
        values.sort();
        let values = values.join(",");
        let text = match str_at(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({values})"),
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes that a base64 text decodes to.
fn base64_len(encoded: &str) -> usize {
    let symbols = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    symbols * 3 / 4
}

/// Escapes a map key for use in a JSON pointer.
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// kubectl's HumanDuration of `now - then`.
fn since(then: Timestamp, now: Timestamp) -> String {
    human_duration(now.as_nanosecond() - then.as_nanosecond())
}

/// kubectl's HumanDuration: coarser the longer ago, and up to two seconds into the future
/// is taken as clock skew ("0s").
fn human_duration(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// `Mon, 02 Jan 2006 15:04:05 +0000`, kubectl describe's time format (in UTC here).
fn rfc1123(t: Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// `2006-01-02T15:04:05Z`, to the second, as the CREATED AT column shows it.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// RFC 3339 text for `seconds` before [`now`].
    fn ago(seconds: i64) -> String {
        Timestamp::from_second(now().as_second() - seconds)
            .unwrap()
            .to_string()
    }

    fn row(kind: &str, obj: Value, wide: bool) -> Vec<String> {
        let table = table(kind, &[obj], wide, false, now());
        assert_eq!(table.rows.len(), 1);
        assert_eq!(table.rows[0].len(), table.headers.len());
        table.rows[0].clone()
    }

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9c6f5-x2x9q",
                "namespace": "default",
                "creationTimestamp": ago(600),
            },
            "spec": {
                "nodeName": "worker-1",
                "containers": [{"name": "web", "image": "nginx:1.25"}],
            },
            "status": status,
        })
    }

    #[test]
    fn age_follows_kubectl_human_duration_boundaries() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (192, "3m12s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 3 * 60, "5h3m"),
            (8 * 3600 - 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (8 * 86400, "8d"),
            (45 * 86400, "45d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            ((730 + 34) * 86400, "2y34d"),
            (8 * 365 * 86400, "8y"),
            (-1, "0s"),
            (-5, "<invalid>"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(age(Some(&ago(seconds)), now()), expected, "{seconds}s ago");
        }
    }

    #[test]
    fn age_of_missing_or_garbled_timestamp_is_unknown() {
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(Some("yesterday"), now()), "<unknown>");
        assert_eq!(age(Some(""), now()), "<unknown>");
    }

    #[test]
    fn render_pads_columns_to_widest_cell_plus_three() {
        let table = Table {
            headers: vec!["name".into(), "Ready".into(), "AGE".into()],
            rows: vec![
                vec!["nginx-1".into(), "1/1".into(), "5m".into()],
                vec!["a".into(), "0/1".into(), "10s".into()],
            ],
        };
        assert_eq!(
            table.render(),
            "NAME      READY   AGE\n\
             nginx-1   1/1     5m\n\
             a         0/1     10s\n"
        );
    }

    #[test]
    fn render_keeps_narrow_columns_six_wide_and_drops_trailing_spaces() {
        let table = Table {
            headers: vec!["A".into(), "B".into(), "C".into()],
            rows: vec![vec!["x".into(), "y".into(), String::new()]],
        };
        assert_eq!(table.render(), "A     B     C\nx     y\n");
    }

    #[test]
    fn crash_looping_pod_shows_reason_and_restarts_with_age() {
        let obj = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "web",
                "ready": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {
                    "exitCode": 1, "reason": "Error", "finishedAt": ago(125),
                }},
            }],
        }));
        assert_eq!(
            row("Pod", obj, false),
            [
                "web-7d4b9c6f5-x2x9q",
                "0/1",
                "CrashLoopBackOff",
                "3 (2m5s ago)",
                "10m"
            ]
        );
    }

    #[test]
    fn restarts_without_a_known_finish_time_are_a_bare_count() {
        let obj = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 2,
                "state": {"running": {"startedAt": ago(30)}},
            }],
        }));
        assert_eq!(row("Pod", obj, false)[1..4], ["1/1", "Running", "2"]);
    }

    #[test]
    fn pod_being_deleted_is_terminating() {
        let mut obj = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": ago(300)}},
            }],
        }));
        obj["metadata"]["deletionTimestamp"] = json!(ago(-30));
        assert_eq!(row("Pod", obj, false)[1..4], ["1/1", "Terminating", "0"]);
    }

    #[test]
    fn succeeded_pod_is_completed() {
        let obj = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }],
        }));
        assert_eq!(row("Pod", obj, false)[1..4], ["0/1", "Completed", "0"]);
    }

    #[test]
    fn completed_container_beside_a_running_one_leaves_the_pod_running() {
        let mut obj = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "web", "ready": true, "state": {"running": {}}},
                {"name": "job", "ready": false,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            ],
        }));
        obj["spec"]["containers"] = json!([{"name": "web"}, {"name": "job"}]);
        assert_eq!(row("Pod", obj, false)[1..3], ["1/2", "Running"]);
    }

    #[test]
    fn pod_without_status_is_pending() {
        let mut obj = pod(Value::Null);
        obj.as_object_mut().unwrap().remove("status");
        assert_eq!(row("Pod", obj, false)[1..4], ["0/1", "Pending", "0"]);
    }

    #[test]
    fn waiting_container_reason_replaces_the_phase() {
        let obj = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": "web", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
            }],
        }));
        assert_eq!(row("Pod", obj, false)[2], "ErrImagePull");
    }

    #[test]
    fn container_killed_without_reason_shows_exit_code() {
        let obj = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{
                "name": "web", "state": {"terminated": {"exitCode": 137}},
            }],
        }));
        assert_eq!(row("Pod", obj, false)[2], "ExitCode:137");
    }

    #[test]
    fn init_container_progress_shows_in_status() {
        let mut obj = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "migrate", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "warm", "state": {"running": {}}},
            ],
            "containerStatuses": [{
                "name": "web", "state": {"waiting": {"reason": "PodInitializing"}},
            }],
        }));
        obj["spec"]["initContainers"] = json!([{"name": "migrate"}, {"name": "warm"}]);
        assert_eq!(row("Pod", obj.clone(), false)[2], "Init:1/2");

        obj["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(row("Pod", obj, false)[2], "Init:CrashLoopBackOff");
    }

    #[test]
    fn wide_pod_row_shows_ip_node_and_absent_fields_as_none() {
        let obj = pod(json!({
            "phase": "Running",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "containerStatuses": [{"name": "web", "ready": true, "state": {"running": {}}}],
        }));
        let table = table("Pod", &[obj], true, false, now());
        assert_eq!(
            table.headers,
            [
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE",
                "READINESS GATES"
            ]
        );
        assert_eq!(
            table.rows[0][5..],
            ["10.244.1.7", "worker-1", "<none>", "<none>"]
        );
    }

    #[test]
    fn service_ports_show_node_ports_and_protocols() {
        let svc = json!({
            "kind": "Service",
            "metadata": {"name": "web", "creationTimestamp": ago(3600)},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.12.4",
                "clusterIPs": ["10.96.12.4"],
                "selector": {"app": "web", "tier": "front"},
                "ports": [
                    {"port": 80, "protocol": "TCP", "targetPort": 8080},
                    {"port": 443, "nodePort": 30443},
                    {"port": 53, "protocol": "UDP"},
                ],
            },
        });
        assert_eq!(
            row("Service", svc, true),
            [
                "web",
                "NodePort",
                "10.96.12.4",
                "<none>",
                "80/TCP,443:30443/TCP,53/UDP",
                "60m",
                "app=web,tier=front"
            ]
        );
    }

    #[test]
    fn load_balancer_without_address_is_pending_and_headless_has_no_ports() {
        let balancer = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9",
                     "ports": [{"port": 80, "nodePort": 31000}]},
        });
        assert_eq!(row("Service", balancer, false)[3], "<pending>");
        let headless = json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]},
        });
        assert_eq!(
            row("Service", headless, false)[1..5],
            ["ClusterIP", "None", "<none>", "<none>"]
        );
    }

    #[test]
    fn endpoints_beyond_three_are_counted() {
        let obj = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(60)},
            "subsets": [{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"},
                              {"ip": "10.0.0.4"}, {"ip": "fd00::5"}],
                "ports": [{"port": 80}],
            }],
        });
        assert_eq!(
            row("Endpoints", obj, false)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
        );
        let few = json!({"metadata": {"name": "db"},
                         "subsets": [{"addresses": [{"ip": "fd00::5"}], "ports": [{"port": 5432}]}]});
        assert_eq!(row("Endpoints", few, false)[1], "[fd00::5]:5432");
        let none = json!({"metadata": {"name": "idle"}});
        assert_eq!(row("Endpoints", none, false)[1], "<none>");
    }

    fn node(ready: Option<&str>, unschedulable: bool) -> Value {
        let conditions: Vec<Value> = ready
            .map(|status| json!({"type": "Ready", "status": status}))
            .into_iter()
            .collect();
        json!({
            "kind": "Node",
            "metadata": {
                "name": "cp-1",
                "creationTimestamp": ago(3 * 86400 + 4 * 3600),
                "labels": {
                    "kubernetes.io/hostname": "cp-1",
                    "node-role.kubernetes.io/control-plane": "",
                    "node-role.kubernetes.io/etcd": "",
                },
            },
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                              {"type": "Hostname", "address": "cp-1"}],
                "nodeInfo": {"kubeletVersion": "v1.30.2", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "bosun://0.1"},
            },
        })
    }

    #[test]
    fn cordoned_node_shows_scheduling_disabled() {
        assert_eq!(
            row("Node", node(Some("True"), true), false),
            [
                "cp-1",
                "Ready,SchedulingDisabled",
                "control-plane,etcd",
                "3d4h",
                "v1.30.2"
            ]
        );
        assert_eq!(
            row("Node", node(Some("Unknown"), false), false)[1],
            "NotReady"
        );
        assert_eq!(row("Node", node(None, false), false)[1], "Unknown");
    }

    #[test]
    fn wide_node_row_shows_addresses_and_system_info() {
        assert_eq!(
            row("Node", node(Some("True"), false), true)[5..],
            [
                "172.18.0.2",
                "<none>",
                "Debian GNU/Linux 12",
                "6.1.0",
                "bosun://0.1"
            ]
        );
    }

    #[test]
    fn deployment_row_counts_replicas_and_wide_shows_selector() {
        let deploy = json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {
                "replicas": 3,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "canary"]}],
                },
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "proxy", "image": "envoy:1.30"},
                ]}},
            },
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            row("Deployment", deploy, true),
            [
                "web",
                "2/3",
                "3",
                "2",
                "120m",
                "web,proxy",
                "nginx:1.25,envoy:1.30",
                "app=web,env in (canary,prod)"
            ]
        );
        let bare = json!({"metadata": {"name": "new"}, "spec": {}});
        assert_eq!(row("Deployment", bare, false)[1..4], ["0/1", "0", "0"]);
    }

    #[test]
    fn replica_and_daemon_sets_show_their_counts() {
        let rs = json!({"metadata": {"name": "web-7d4b9c6f5"}, "spec": {"replicas": 2},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(row("ReplicaSet", rs, false)[1..4], ["2", "2", "1"]);
        let ds = json!({
            "metadata": {"name": "proxy"},
            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2},
        });
        assert_eq!(
            row("DaemonSet", ds, false)[1..7],
            ["3", "3", "2", "3", "2", "kubernetes.io/os=linux"]
        );
    }

    #[test]
    fn job_status_comes_from_conditions() {
        let job = |conditions: Value, completion: Option<String>| {
            json!({
                "metadata": {"name": "backup", "creationTimestamp": ago(400)},
                "spec": {"completions": 1},
                "status": {
                    "succeeded": 1,
                    "startTime": ago(300),
                    "completionTime": completion,
                    "conditions": conditions,
                },
            })
        };
        let done = job(
            json!([{"type": "Complete", "status": "True"}]),
            Some(ago(225)),
        );
        assert_eq!(
            row("Job", done, false),
            ["backup", "Complete", "1/1", "75s", "6m40s"]
        );
        let failed = job(json!([{"type": "Failed", "status": "True"}]), None);
        assert_eq!(row("Job", failed, false)[1..4], ["Failed", "1/1", "5m"]);
        let suspended = job(json!([{"type": "Suspended", "status": "True"}]), None);
        assert_eq!(row("Job", suspended, false)[1], "Suspended");
        let running = job(json!([]), None);
        assert_eq!(row("Job", running, false)[1], "Running");
    }

    #[test]
    fn namespace_column_comes_first_for_namespaced_kinds_only() {
        let cm = json!({"metadata": {"name": "settings", "namespace": "prod"},
                        "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AAAA"}});
        let table = table("ConfigMap", &[cm], false, true, now());
        assert_eq!(table.headers, ["NAMESPACE", "NAME", "DATA", "AGE"]);
        assert_eq!(table.rows[0], ["prod", "settings", "3", "<unknown>"]);

        let nodes = super::table("Node", &[node(Some("True"), false)], false, true, now());
        assert_eq!(nodes.headers[0], "NAME");
    }

    #[test]
    fn small_kinds_show_their_columns() {
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "AAAA", "tls.key": "AAAA"}});
        assert_eq!(
            row("Secret", secret, false)[1..3],
            ["kubernetes.io/tls", "2"]
        );
        let lease =
            json!({"metadata": {"name": "scheduler"}, "spec": {"holderIdentity": "cp-1_ab12"}});
        assert_eq!(row("Lease", lease, false)[1], "cp-1_ab12");
        let ns = json!({"metadata": {"name": "prod"}, "status": {"phase": "Terminating"}});
        assert_eq!(row("Namespace", ns, false)[1], "Terminating");
        let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2024-01-02T03:04:05.250Z"}});
        assert_eq!(
            row("ClusterRole", role, false),
            ["reader", "2024-01-02T03:04:05Z"]
        );
        let binding = json!({
            "metadata": {"name": "read-all", "creationTimestamp": ago(30)},
            "roleRef": {"kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "User", "name": "ann"}, {"kind": "ServiceAccount",
                          "name": "ci", "namespace": "tools"}],
        });
        assert_eq!(
            row("RoleBinding", binding, true),
            [
                "read-all",
                "ClusterRole/reader",
                "30s",
                "ann",
                "",
                "tools/ci"
            ]
        );
        let other =
            json!({"kind": "Widget", "metadata": {"name": "w", "creationTimestamp": ago(5)}});
        let widgets = table("Widget", &[other], true, false, now());
        assert_eq!(widgets.headers, ["NAME", "AGE"]);
        assert_eq!(widgets.rows[0], ["w", "5s"]);
    }

    #[test]
    fn event_row_names_object_by_lowercase_kind() {
        let event = json!({
            "metadata": {"name": "web.17c1"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "firstTimestamp": ago(600),
            "lastTimestamp": ago(20),
            "count": 7,
        });
        let table = table("Event", &[event], false, false, now());
        assert_eq!(
            table.headers,
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert_eq!(
            table.rows[0],
            [
                "20s",
                "Warning",
                "BackOff",
                "pod/web-1",
                "Back-off restarting failed container"
            ]
        );
    }

    #[test]
    fn describe_pod_lists_containers_conditions_and_events() {
        let mut obj = pod(json!({
            "phase": "Running",
            "hostIP": "172.18.0.3",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": "2024-05-01T11:50:00Z",
            "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True"},
                           {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 1,
                "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
            }],
        }));
        obj["metadata"]["labels"] = json!({"app": "web", "pod-template-hash": "7d4b9c6f5"});
        obj["metadata"]["annotations"] = json!({LAST_APPLIED: "{\"big\":1}", "team": "edge"});
        obj["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": "web-7d4b9c6f5", "controller": true}]);
        obj["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        obj["spec"]["containers"][0]["env"] = json!([
            {"name": "MODE", "value": "prod"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]);
        obj["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
        obj["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data", "readOnly": true}]);
        obj["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        let events = [json!({
            "type": "Normal", "reason": "Scheduled",
            "message": "Successfully assigned default/web to worker-1",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(600), "count": 1,
        })];
        let text = describe(&obj, &events, now());
        let expected_start = "\
Name:             web-7d4b9c6f5-x2x9q
Namespace:        default
Service Account:
Node:             worker-1/172.18.0.3
Start Time:       Wed, 01 May 2024 11:50:00 +0000
Labels:           app=web
                  pod-template-hash=7d4b9c6f5
Annotations:      team: edge
Status:           Running
IP:               10.244.1.7
IPs:
  IP:           10.244.1.7
Controlled By:  ReplicaSet/web-7d4b9c6f5
Containers:
  web:
    Image:          nginx:1.25
    Port:           80/TCP
    Host Port:      0/TCP
    State:          Running
      Started:      Wed, 01 May 2024 11:55:00 +0000
    Ready:          True
    Restart Count:  1
    Requests:
      cpu:  100m
    Environment:
      MODE:  prod
      POD:    (v1:metadata.name)
    Mounts:
      /data from data (ro)
Conditions:
  Type          Status
  Ready         True
  PodScheduled  True
Volumes:
  data:
    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)
    Medium:
    SizeLimit:   <unset>
QoS Class:       Burstable
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type    Reason     Age   From               Message
  ----    ------     ----  ----               -------
  Normal  Scheduled  10m   default-scheduler  Successfully assigned default/web to worker-1
";
        assert_eq!(text, expected_start, "got:\n{text}");
    }

    #[test]
    fn describe_without_events_says_none_and_hides_last_applied() {
        let cm = json!({
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "prod",
                         "annotations": {LAST_APPLIED: "{}"}},
            "data": {"mode": "fast\nsafe"},
        });
        let text = describe(&cm, &[], now());
        assert!(!text.contains(LAST_APPLIED), "{text}");
        assert!(text.contains("Annotations:  <none>\n"), "{text}");
        assert!(text.contains("mode:\n----\nfast\nsafe\n"), "{text}");
        assert!(text.ends_with("\nEvents:  <none>\n"), "{text}");
    }

    #[test]
    fn repeated_events_show_count_and_span() {
        let events = [json!({
            "type": "Warning", "reason": "BackOff", "message": "Back-off",
            "reportingController": "kubelet",
            "firstTimestamp": ago(3600), "lastTimestamp": ago(30), "count": 12,
        })];
        let text = describe(&json!({"kind": "Pod"}), &events, now());
        assert!(
            text.contains("  Warning  BackOff  30s (x12 over 60m)  kubelet  Back-off\n"),
            "{text}"
        );
    }

    #[test]
    fn describe_deployment_summarises_replicas_and_strategy() {
        let deploy = json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default",
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
                },
            },
            "status": {
                "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                "conditions": [{"type": "Available", "status": "True",
                                "reason": "MinimumReplicasAvailable"}],
            },
        });
        let text = describe(&deploy, &[], now());
        for line in [
            "Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable\n",
            "RollingUpdateStrategy:  25% max unavailable, 1 max surge\n",
            "Selector:               app=web\n",
            "Pod Template:\n  Labels:  app=web\n  Containers:\n   web:\n    Image:",
            "  Type       Status  Reason\n",
            "  Available  True    MinimumReplicasAvailable\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn describe_service_and_node_show_their_sections() {
        let svc = json!({
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.4",
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
        });
        let text = describe(&svc, &[], now());
        for line in [
            "Type:              NodePort\n",
            "Port:              http  80/TCP\n",
            "TargetPort:        8080/TCP\n",
            "NodePort:          http  30080/TCP\n",
            "Session Affinity:  None\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }

        let mut cordoned = node(Some("True"), true);
        cordoned["spec"]["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        cordoned["status"]["capacity"] = json!({"cpu": "4", "memory": "8Gi"});
        let text = describe(&cordoned, &[], now());
        for line in [
            "Roles:              control-plane,etcd\n",
            "Taints:             node-role.kubernetes.io/control-plane:NoSchedule\n",
            "Unschedulable:      true\n",
            "Addresses:\n  InternalIP:  172.18.0.2\n  Hostname:    cp-1\n",
            "Capacity:\n  cpu:     4\n  memory:  8Gi\n",
            "  Kubelet Version:",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("Namespace:"), "{text}");
    }

    #[test]
    fn describe_unknown_kind_renders_spec_fields() {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "scheduler", "namespace": "kube-system"},
            "spec": {"holderIdentity": "cp-1", "leaseDurationSeconds": 15,
                     "preferredHolder": null, "strategy": {"maxSurge": "25%"}},
        });
        let text = describe(&lease, &[], now());
        assert_eq!(
            text,
            "Name:         scheduler\n\
             Namespace:    kube-system\n\
             Labels:       <none>\n\
             Annotations:  <none>\n\
             Spec:\n\
             \x20 Holder Identity:         cp-1\n\
             \x20 Lease Duration Seconds:  15\n\
             \x20 Preferred Holder:\n\
             \x20 Strategy:\n\
             \x20   Max Surge:  25%\n\
             Events:         <none>\n"
        );
    }

    #[test]
    fn secrets_describe_sizes_not_values() {
        let secret = json!({
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "prod"},
            "data": {"password": "aHVudGVyMg=="},
        });
        let text = describe(&secret, &[], now());
        assert!(text.contains("password:  7 bytes\n"), "{text}");
        assert!(!text.contains("aHVudGVyMg"), "{text}");
    }

    #[test]
    fn smart_labels_split_camel_case_and_keep_acronyms() {
        assert_eq!(smart_label("maxSurge"), "Max Surge");
        assert_eq!(smart_label("podIPs"), "Pod IPs");
        assert_eq!(smart_label("apiVersion"), "API Version");
        assert_eq!(smart_label("clusterIP"), "Cluster IP");
        assert_eq!(
            smart_label("app.kubernetes.io/name"),
            "app.kubernetes.io/name"
        );
    }

    #[test]
    fn garbage_input_never_panics() {
        let junk = [
            json!(null),
            json!(42),
            json!("pod"),
            json!([1, 2]),
            json!({"metadata": 5, "spec": [], "status": "x"}),
            json!({"kind": "Pod", "metadata": {"name": 7},
                   "spec": {"containers": "no", "volumes": [{"name": "v"}]},
                   "status": {"containerStatuses": [{"state": {"terminated": 1}}]}}),
            json!({"kind": "Node", "status": {"conditions": [null]}}),
            json!({"kind": "Service", "spec": {"ports": [{"port": "http"}]}}),
            json!({"kind": "Deployment", "spec": {"selector": {"matchExpressions": [{}]}}}),
        ];
        for kind in [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "Job",
            "Service",
            "Endpoints",
            "Node",
            "Namespace",
            "ConfigMap",
            "Secret",
            "Lease",
            "Event",
            "Role",
            "RoleBinding",
            "Widget",
        ] {
            for wide in [false, true] {
                let table = table(kind, &junk, wide, true, now());
                for row in &table.rows {
                    assert_eq!(row.len(), table.headers.len(), "{kind}");
                }
                let _ = table.render();
            }
        }
        for obj in &junk {
            let _ = describe(obj, &junk, now());
        }
    }
}
