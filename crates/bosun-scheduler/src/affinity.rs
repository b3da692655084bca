//! Node affinity (required and preferred) and inter-pod affinity and anti-affinity
//! (required, any topology key: nodes with the same value of that label are one domain).

use bosun_api::json::At;
use rustc_hash::FxHashMap;
use std::sync::Arc;

use serde_json::Value;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.at(ptr).and_then(Value::as_str).unwrap_or("")
}

fn values(e: &Value) -> Vec<&str> {
    e.get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One `matchExpressions` entry (node or label selector) against a value lookup.
fn expression(e: &Value, get: &dyn Fn(&str) -> Option<String>) -> bool {
    let v = get(s(e, "/key"));
    let vals = values(e);
    let num = |x: &str| x.parse::<i64>().ok();
    match s(e, "/operator") {
        "In" => v.is_some_and(|v| vals.contains(&v.as_str())),
        "NotIn" => !v.is_some_and(|v| vals.contains(&v.as_str())),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => {
            matches!((v.as_deref().and_then(num), vals.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((v.as_deref().and_then(num), vals.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

fn label_of(labels: Option<&Value>, key: &str) -> Option<String> {
    labels
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether a node matches one `nodeSelectorTerm` (all of its expressions and fields).
fn term_matches(term: &Value, node_name: &str, labels: Option<&Value>) -> bool {
    let by_label = |k: &str| label_of(labels, k);
    let by_field = |k: &str| (k == "metadata.name").then(|| node_name.to_string());
    let exprs = term.get("matchExpressions").and_then(Value::as_array);
    let fields = term.get("matchFields").and_then(Value::as_array);
    exprs
        .into_iter()
        .flatten()
        .all(|e| expression(e, &by_label))
        && fields
            .into_iter()
            .flatten()
            .all(|e| expression(e, &by_field))
}

/// `requiredDuringSchedulingIgnoredDuringExecution` node affinity: any term matches.
pub(crate) fn node_required(pod: &Value, node_name: &str, labels: Option<&Value>) -> bool {
    let Some(terms) = pod
        .at("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    terms.is_empty() || terms.iter().any(|t| term_matches(t, node_name, labels))
}

/// The summed weights of the preferred node affinity terms a node matches.
pub(crate) fn node_preferred(pod: &Value, node_name: &str, labels: Option<&Value>) -> i128 {
    pod.at("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            p.get("preference")
                .is_some_and(|t| term_matches(t, node_name, labels))
        })
        .map(|p| i128::from(p.get("weight").and_then(Value::as_i64).unwrap_or(0)))
        .sum()
}

/// A metav1 LabelSelector against a pod's labels.
fn selects(sel: &Value, pod: &Value) -> bool {
    let labels = pod.at("/metadata/labels");
    let by_label = |k: &str| label_of(labels, k);
    let ml = sel.get("matchLabels").and_then(Value::as_object);
    let me = sel.get("matchExpressions").and_then(Value::as_array);
    ml.into_iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        && me.into_iter().flatten().all(|e| expression(e, &by_label))
}

/// Pods per node and node labels, for the inter-pod rules.
#[derive(Default)]
pub(crate) struct PodIndex<'a> {
    /// Pods on each node (bound, or bound by this scheduler and not yet seen).
    pub(crate) pods: FxHashMap<String, Vec<Arc<Value>>>,
    /// Labels of each node.
    pub(crate) labels: FxHashMap<&'a str, Option<&'a Value>>,
}

impl PodIndex<'_> {
    /// Topology values (of `key`) of the nodes running a pod that `term` selects.
    fn domains(&self, term: &Value, pod_ns: &str) -> Vec<String> {
        let key = s(term, "/topologyKey");
        let namespaces: Vec<&str> = term
            .get("namespaces")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_else(|| vec![pod_ns]);
        let Some(sel) = term.get("labelSelector") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (node, pods) in &self.pods {
            let hit = pods
                .iter()
                .any(|p| namespaces.contains(&s(p, "/metadata/namespace")) && selects(sel, p));
            if hit {
                if let Some(v) = label_of(self.labels.get(node.as_str()).copied().flatten(), key) {
                    out.push(v);
                }
            }
        }
        out
    }
}

/// Which required inter-pod rule a node breaks, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InterPod {
    /// A required pod affinity term finds no matching pod in the node's domain.
    Affinity,
    /// A required pod anti-affinity term finds a matching pod in the node's domain.
    AntiAffinity,
}

/// Checks the pod's required pod affinity and anti-affinity against a node.
pub(crate) fn inter_pod(
    pod: &Value,
    node_labels: Option<&Value>,
    index: &PodIndex<'_>,
) -> Result<(), InterPod> {
    let ns = s(pod, "/metadata/namespace");
    let terms = |kind: &str| {
        pod.at(&format!(
            "/spec/affinity/{kind}/requiredDuringSchedulingIgnoredDuringExecution"
        ))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    };
    for t in terms("podAntiAffinity") {
        let mine = label_of(node_labels, s(&t, "/topologyKey"));
        if mine.is_some_and(|m| index.domains(&t, ns).contains(&m)) {
            return Err(InterPod::AntiAffinity);
        }
    }
    for t in terms("podAffinity") {
        let mine = label_of(node_labels, s(&t, "/topologyKey"));
        let domains = index.domains(&t, ns);
        // The first pod of a group may go anywhere its own labels satisfy, as in Kubernetes.
        let self_match =
            t.get("labelSelector").is_some_and(|sel| selects(sel, pod)) && domains.is_empty();
        if !self_match && !mine.is_some_and(|m| domains.contains(&m)) {
            return Err(InterPod::Affinity);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_affinity_terms_and_preferences() {
        let pod = json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}, {"key": "gpus", "operator": "Gt", "values": ["1"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 7, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}]}}}});
        let l = json!({"zone": "a", "gpus": "2", "disk": "ssd"});
        assert!(node_required(&pod, "n1", Some(&l)));
        assert!(!node_required(
            &pod,
            "n1",
            Some(&json!({"zone": "c", "gpus": "2"}))
        ));
        assert!(!node_required(
            &pod,
            "n1",
            Some(&json!({"zone": "a", "gpus": "1"}))
        ));
        assert!(node_required(&pod, "special", None));
        assert_eq!(node_preferred(&pod, "n1", Some(&l)), 7);
        assert_eq!(node_preferred(&pod, "n1", Some(&json!({}))), 0);
        assert!(node_required(&json!({}), "x", None));
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_and_affinity_brings_them_together() {
        let node_a = json!({"kubernetes.io/hostname": "a"});
        let node_b = json!({"kubernetes.io/hostname": "b"});
        let running = Arc::new(json!({"metadata": {"namespace": "n", "labels": {"app": "db"}}}));
        let mut index = PodIndex::default();
        index.pods.insert("a".into(), vec![running]);
        index.labels.insert("a", Some(&node_a));
        index.labels.insert("b", Some(&node_b));
        let term = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"});
        let anti = json!({"metadata": {"namespace": "n", "labels": {"app": "db"}},
            "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}}});
        assert_eq!(
            inter_pod(&anti, Some(&node_a), &index),
            Err(InterPod::AntiAffinity)
        );
        assert_eq!(inter_pod(&anti, Some(&node_b), &index), Ok(()));
        let with = json!({"metadata": {"namespace": "n", "labels": {"app": "web"}},
            "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}}});
        assert_eq!(inter_pod(&with, Some(&node_a), &index), Ok(()));
        assert_eq!(
            inter_pod(&with, Some(&node_b), &index),
            Err(InterPod::Affinity)
        );
    }
}
