//! The kinds of object bosun serves, how users name them, and where they live in the store.
//!
//! Objects are stored as JSON under `/registry/<resource>/<namespace>/<name>` (cluster-scoped:
//! `/registry/<resource>/<name>`), as kube-apiserver lays out etcd.

/// One kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// `Pod`.
    pub kind: &'static str,
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name, as in URLs and RBAC rules: `pods`.
    pub resource: &'static str,
    /// Singular: `pod`.
    pub singular: &'static str,
    /// Short names (`po`, `deploy`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the kind has a status subresource: then updates of the object keep the stored
    /// status, and updates of `status` keep everything else.
    pub has_status: bool,
}

/// Prefix of every object key.
pub const REGISTRY: &str = "/registry/";

const fn k(
    kind: &'static str,
    group: &'static str,
    resource: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    has_status: bool,
) -> KindInfo {
    let version = "v1";
    KindInfo {
        kind,
        group,
        version,
        resource,
        singular,
        short_names,
        namespaced,
        has_status,
    }
}

/// Every kind bosun serves.
pub const KINDS: &[KindInfo] = &[
    k(
        "Namespace",
        "",
        "namespaces",
        "namespace",
        &["ns"],
        false,
        true,
    ),
    k("Node", "", "nodes", "node", &["no"], false, true),
    k("Pod", "", "pods", "pod", &["po"], true, true),
    k("Service", "", "services", "service", &["svc"], true, true),
    k(
        "Endpoints",
        "",
        "endpoints",
        "endpoints",
        &["ep"],
        true,
        false,
    ),
    k(
        "ConfigMap",
        "",
        "configmaps",
        "configmap",
        &["cm"],
        true,
        false,
    ),
    k("Secret", "", "secrets", "secret", &[], true, false),
    k("Event", "", "events", "event", &["ev"], true, false),
    k(
        "ReplicaSet",
        "apps",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
        true,
    ),
    k(
        "Deployment",
        "apps",
        "deployments",
        "deployment",
        &["deploy"],
        true,
        true,
    ),
    k(
        "DaemonSet",
        "apps",
        "daemonsets",
        "daemonset",
        &["ds"],
        true,
        true,
    ),
    k("Job", "batch", "jobs", "job", &[], true, true),
    k(
        "Lease",
        "coordination.k8s.io",
        "leases",
        "lease",
        &[],
        true,
        false,
    ),
    k(
        "Role",
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        &[],
        true,
        false,
    ),
    k(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        &[],
        false,
        false,
    ),
    k(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        &[],
        true,
        false,
    ),
    k(
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        &[],
        false,
        false,
    ),
];

impl KindInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{REGISTRY}{}/{namespace}/{name}", self.resource)
        } else {
            format!("{REGISTRY}{}/{name}", self.resource)
        }
    }

    /// The key prefix of every object of this kind in `namespace` (all namespaces when
    /// empty, or for cluster-scoped kinds).
    pub fn prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("{REGISTRY}{}/{namespace}/", self.resource)
        } else {
            format!("{REGISTRY}{}/", self.resource)
        }
    }
}

/// The kind a user means by `name`: a plural, singular or short name, or a kind, any case,
/// optionally qualified by its group (`deployments.apps`).
pub fn resolve(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    KINDS.iter().find(|k| {
        group.as_deref().is_none_or(|g| g == k.group)
            && (k.resource == base
                || k.singular == base
                || k.kind.eq_ignore_ascii_case(&base)
                || k.short_names.contains(&base.as_str()))
    })
}

/// The kind of a manifest, from its `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version() == api_version)
}

/// The kind of a plural resource name, exactly.
pub fn by_resource(resource: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.resource == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_name_kinds_as_kubectl_users_do() {
        for name in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(resolve(name).map(|k| k.kind), Some("Pod"), "{name}");
        }
        assert_eq!(resolve("deploy").map(|k| k.kind), Some("Deployment"));
        assert_eq!(
            resolve("deployments.apps").map(|k| k.kind),
            Some("Deployment")
        );
        assert_eq!(resolve("deployments.batch"), None);
        assert_eq!(resolve("widgets"), None);
    }

    #[test]
    fn keys_follow_the_kubernetes_layout() {
        let pod = by_kind("v1", "Pod").map(|k| k.key("web", "a"));
        assert_eq!(pod.as_deref(), Some("/registry/pods/web/a"));
        let node = by_resource("nodes").map(|k| k.key("", "n1"));
        assert_eq!(node.as_deref(), Some("/registry/nodes/n1"));
        assert_eq!(
            by_kind("apps/v1", "Deployment").map(|k| k.prefix("")),
            Some("/registry/deployments/".to_string())
        );
        assert_eq!(by_kind("v1", "Deployment"), None);
    }

    #[test]
    fn no_resource_prefix_is_a_prefix_of_another() {
        // List prefixes end with '/', so "/registry/roles/" never matches rolebindings.
        for a in KINDS {
            for b in KINDS {
                if a != b {
                    assert!(!b.prefix("").starts_with(&a.prefix("")));
                }
            }
        }
    }
}
