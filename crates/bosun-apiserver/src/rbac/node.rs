//! The node authorizer: what an agent, authenticated as `system:node:<name>`, may do.
//!
//! Modelled on Kubernetes' Node authorizer, simplified: a node may read the objects its pods
//! need, write its own Node and Lease, post events, and change only the pods bound to it.

use super::{Attributes, Decision, UserInfo};

/// The group every node identity belongs to.
pub const NODES_GROUP: &str = "system:nodes";

/// Prefix of node user names: `system:node:<node name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The namespace of node heartbeat Leases, one per node, named after it.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const COORDINATION_GROUP: &str = "coordination.k8s.io";

/// `Some(node name)` if the user is a node identity: named `system:node:<name>` with a
/// non-empty name, and in the group `system:nodes`.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.in_group(NODES_GROUP)).then_some(name)
}

/// Decides a request by node `node`. `target_pod_node` is `spec.nodeName` of the pod the
/// request names (the caller looks it up for pod requests with a name), `None` otherwise or
/// when the pod is not bound.
///
/// A node may:
/// - get, list and watch nodes, pods, services, endpoints, configmaps, secrets and
///   namespaces, in any namespace;
/// - create, get, update and patch its own Node (for create, the caller sets `attrs.name`
///   from the object), and get, update and patch its `nodes/status`;
/// - create, get, update, patch and delete its own Lease (`kube-node-lease/<node>`);
/// - create, update and patch events in any namespace;
/// - update and patch `pods/status`, and delete pods, of the pods bound to it.
///
/// Everything else is denied, with a message naming the node, the verb and the resource.
///
/// Known simplification: Kubernetes lets a node read only the Secrets and ConfigMaps (and
/// other objects) referenced by the pods bound to it, tracked in a graph of pods and their
/// references; here a node may read every Secret and ConfigMap, so a stolen node
/// certificate exposes all of them.
pub fn authorize_node(node: &str, attrs: &Attributes, target_pod_node: Option<&str>) -> Decision {
    let verb = attrs.verb.as_str();
    let read = matches!(verb, "get" | "list" | "watch");
    let deny = |why: &str| Decision::Deny(format!("node {node:?} {}: {why}", attrs.cannot()));
    let bound_pod = |what: &str| match target_pod_node {
        Some(bound) if bound == node => {
            Decision::Allow(format!("node {node:?} may {what} pods bound to it"))
        }
        Some(other) => deny(&format!("the pod is bound to node {other:?}")),
        None => deny("the pod is not bound to this node"),
    };
    match (
        attrs.api_group.as_str(),
        attrs.resource.as_str(),
        attrs.subresource.as_str(),
    ) {
        ("", "nodes", "") if read => Decision::Allow(format!("node {node:?} may read nodes")),
        ("", "nodes", sub @ ("" | "status")) => {
            let own_verbs = if sub.is_empty() {
                matches!(verb, "create" | "update" | "patch")
            } else {
                matches!(verb, "get" | "update" | "patch")
            };
            if !own_verbs {
                deny("a node may only create, update and patch its own Node")
            } else if attrs.name != node {
                deny("a node may only modify its own Node")
            } else {
                Decision::Allow(format!("node {node:?} may modify its own Node"))
            }
        }
        ("", "pods", "") if read => Decision::Allow(format!("node {node:?} may read pods")),
        ("", "pods", "") if verb == "delete" => bound_pod("delete"),
        ("", "pods", "status") if matches!(verb, "update" | "patch") => {
            bound_pod("update the status of")
        }
        ("", "services" | "endpoints" | "configmaps" | "secrets" | "namespaces", "") if read => {
            Decision::Allow(format!("node {node:?} may read {}", attrs.resource))
        }
        (COORDINATION_GROUP, "leases", "") => {
            if !matches!(verb, "create" | "get" | "update" | "patch" | "delete") {
                deny("a node may only use its own Lease")
            } else if attrs.namespace != NODE_LEASE_NAMESPACE || attrs.name != node {
                deny(&format!(
                    "a node may only use its own Lease {NODE_LEASE_NAMESPACE}/{node}"
                ))
            } else {
                Decision::Allow(format!("node {node:?} may use its own Lease"))
            }
        }
        ("" | "events.k8s.io", "events", "") if matches!(verb, "create" | "update" | "patch") => {
            Decision::Allow(format!("node {node:?} may record events"))
        }
        _ => deny("not allowed for nodes"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{attrs, sub};
    use super::*;

    #[test]
    fn node_identity_needs_the_prefix_a_name_and_the_group() {
        let node = UserInfo::new("system:node:n1", [NODES_GROUP, "system:authenticated"]);
        assert_eq!(node_name(&node), Some("n1"));
        assert_eq!(
            node_name(&UserInfo::new("system:node:n1", ["system:authenticated"])),
            None
        );
        assert_eq!(
            node_name(&UserInfo::new("system:node:", [NODES_GROUP])),
            None
        );
        assert_eq!(node_name(&UserInfo::new("n1", [NODES_GROUP])), None);
        assert_eq!(
            node_name(&UserInfo::new("alice", ["system:authenticated"])),
            None
        );
    }

    #[test]
    fn a_node_may_read_what_its_pods_need() {
        for resource in [
            "nodes",
            "pods",
            "services",
            "endpoints",
            "configmaps",
            "secrets",
            "namespaces",
        ] {
            for verb in ["get", "list", "watch"] {
                for ns in ["", "web"] {
                    let name = if verb == "get" { "x" } else { "" };
                    let d = authorize_node("n1", &attrs(verb, "", resource, ns, name), None);
                    assert!(d.allowed(), "{verb} {resource} in {ns:?}: {d:?}");
                }
            }
        }
    }

    #[test]
    fn a_node_may_not_write_what_it_only_reads() {
        for (verb, resource) in [
            ("create", "pods"),
            ("update", "pods"),
            ("create", "secrets"),
            ("update", "configmaps"),
            ("delete", "services"),
            ("patch", "namespaces"),
            ("deletecollection", "pods"),
            ("delete", "nodes"),
        ] {
            let d = authorize_node("n1", &attrs(verb, "", resource, "web", "x"), Some("n1"));
            assert!(!d.allowed(), "{verb} {resource}: {d:?}");
        }
        for (group, resource) in [
            ("apps", "deployments"),
            ("rbac.authorization.k8s.io", "roles"),
            ("batch", "jobs"),
        ] {
            let d = authorize_node("n1", &attrs("get", group, resource, "web", "x"), None);
            assert!(!d.allowed(), "{resource}: {d:?}");
        }
    }

    #[test]
    fn a_node_may_register_and_update_only_its_own_node() {
        for verb in ["create", "update", "patch", "get"] {
            assert!(
                authorize_node("n1", &attrs(verb, "", "nodes", "", "n1"), None).allowed(),
                "{verb}"
            );
            assert_eq!(
                authorize_node("n1", &attrs(verb, "", "nodes", "", "n2"), None).allowed(),
                verb == "get",
                "{verb}"
            );
        }
        for verb in ["update", "patch", "get"] {
            let own = sub(attrs(verb, "", "nodes", "", "n1"), "status");
            assert!(authorize_node("n1", &own, None).allowed(), "{verb}");
            let other = sub(attrs(verb, "", "nodes", "", "n2"), "status");
            assert!(!authorize_node("n1", &other, None).allowed(), "{verb}");
        }
        let d = authorize_node("n1", &attrs("update", "", "nodes", "", "n2"), None);
        assert_eq!(
            d.reason(),
            r#"node "n1" cannot update resource "nodes" in API group "" at the cluster scope: a node may only modify its own Node"#
        );
    }

    #[test]
    fn a_node_may_use_only_its_own_lease() {
        let lease = |verb: &str, ns: &str, name: &str| {
            attrs(verb, "coordination.k8s.io", "leases", ns, name)
        };
        for verb in ["create", "get", "update", "patch", "delete"] {
            assert!(
                authorize_node("n1", &lease(verb, "kube-node-lease", "n1"), None).allowed(),
                "{verb}"
            );
            assert!(
                !authorize_node("n1", &lease(verb, "kube-node-lease", "n2"), None).allowed(),
                "{verb}"
            );
            assert!(
                !authorize_node("n1", &lease(verb, "web", "n1"), None).allowed(),
                "{verb}"
            );
        }
        assert!(!authorize_node("n1", &lease("list", "kube-node-lease", ""), None).allowed());
        let d = authorize_node("n1", &lease("update", "kube-system", "leader"), None);
        assert!(d.reason().contains("kube-node-lease/n1"), "{d:?}");
    }

    #[test]
    fn a_node_may_record_events_anywhere() {
        for verb in ["create", "update", "patch"] {
            for ns in ["web", "default"] {
                assert!(authorize_node("n1", &attrs(verb, "", "events", ns, ""), None).allowed());
                assert!(authorize_node(
                    "n1",
                    &attrs(verb, "events.k8s.io", "events", ns, ""),
                    None
                )
                .allowed());
            }
        }
        assert!(!authorize_node("n1", &attrs("delete", "", "events", "web", "e"), None).allowed());
    }

    #[test]
    fn a_node_may_change_only_pods_bound_to_it() {
        let status = |verb: &str| sub(attrs(verb, "", "pods", "web", "p"), "status");
        for verb in ["update", "patch"] {
            assert!(
                authorize_node("n1", &status(verb), Some("n1")).allowed(),
                "{verb}"
            );
            assert!(
                !authorize_node("n1", &status(verb), Some("n2")).allowed(),
                "{verb}"
            );
            assert!(
                !authorize_node("n1", &status(verb), None).allowed(),
                "{verb}"
            );
        }
        let delete = attrs("delete", "", "pods", "web", "p");
        assert!(authorize_node("n1", &delete, Some("n1")).allowed());
        let d = authorize_node("n1", &delete, Some("n2"));
        assert_eq!(
            d.reason(),
            r#"node "n1" cannot delete resource "pods" in API group "" in the namespace "web": the pod is bound to node "n2""#
        );
        let d = authorize_node("n1", &status("update"), None);
        assert!(
            d.reason()
                .contains(r#"node "n1" cannot update resource "pods/status""#),
            "{d:?}"
        );
        assert!(!authorize_node(
            "n1",
            &sub(attrs("create", "", "pods", "web", "p"), "exec"),
            Some("n1")
        )
        .allowed());
        assert!(!authorize_node(
            "n1",
            &sub(attrs("create", "", "pods", "web", "p"), "binding"),
            Some("n1")
        )
        .allowed());
    }
}
