//! The ClusterRoles and ClusterRoleBindings bootstrapped into every cluster.
//!
//! admin, edit and view follow Kubernetes' definitions restricted to the resources bosun
//! serves, with their rules written out instead of aggregated. As in Kubernetes, none of
//! them covers Leases, Nodes or writing status subresources: those belong to the system.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{RBAC_API_GROUP, SUPERUSER_GROUP};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(api_groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

/// Metadata Kubernetes puts on its bootstrapped RBAC objects, so tools recognise them.
fn bootstrap_meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([(
            "kubernetes.io/bootstrapping".to_owned(),
            "rbac-defaults".to_owned(),
        )])),
        annotations: Some(BTreeMap::from([(
            "rbac.authorization.kubernetes.io/autoupdate".to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: bootstrap_meta(name),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// Reading the namespaced workload objects and their status; no Secrets, no RBAC objects.
fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "events",
                "namespaces",
                "namespaces/status",
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
            READ,
        ),
        rule(&["batch"], &["jobs", "jobs/status"], READ),
    ]
}

/// view, plus reading Secrets and exec, and writing the workload objects; no RBAC objects.
fn edit_rules() -> Vec<PolicyRule> {
    let mut rules = view_rules();
    rules.extend([
        rule(&[""], &["pods/exec", "secrets"], READ),
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "pods",
                "pods/exec",
                "secrets",
                "services",
            ],
            WRITE,
        ),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
            ],
            WRITE,
        ),
        rule(&["batch"], &["jobs"], WRITE),
    ]);
    rules
}

/// edit, plus managing Roles and RoleBindings (granted through a RoleBinding, so in one
/// namespace).
fn admin_rules() -> Vec<PolicyRule> {
    let mut rules = edit_rules();
    let all: Vec<&str> = READ.iter().chain(WRITE).copied().collect();
    rules.push(rule(&[RBAC_API_GROUP], &["rolebindings", "roles"], &all));
    rules
}

/// The default ClusterRoles: `cluster-admin` (every verb on every resource and non-resource
/// URL), `admin`, `edit`, `view` (meant for RoleBindings in a namespace: see the module
/// documentation) and `system:node` (reading Nodes).
pub fn default_cluster_roles() -> Vec<ClusterRole> {
    let everything = PolicyRule {
        non_resource_urls: Some(strings(&["*"])),
        verbs: strings(&["*"]),
        ..Default::default()
    };
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), everything],
        ),
        cluster_role("admin", admin_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        cluster_role("system:node", vec![rule(&[""], &["nodes"], READ)]),
    ]
}

/// The default ClusterRoleBindings: `cluster-admin` to the group `system:masters`.
pub fn default_cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![ClusterRoleBinding {
        metadata: bootstrap_meta("cluster-admin"),
        role_ref: RoleRef {
            api_group: RBAC_API_GROUP.to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "cluster-admin".to_owned(),
        },
        subjects: Some(vec![Subject {
            api_group: Some(RBAC_API_GROUP.to_owned()),
            kind: "Group".to_owned(),
            name: SUPERUSER_GROUP.to_owned(),
            namespace: None,
        }]),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(name: &str) -> Vec<PolicyRule> {
        default_cluster_roles()
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .and_then(|r| r.rules)
            .unwrap_or_else(|| panic!("no default role {name}"))
    }

    fn mentions(rules: &[PolicyRule], needle: &str) -> bool {
        rules.iter().any(|r| {
            r.resources
                .iter()
                .flatten()
                .any(|res| res == needle || res.starts_with(&format!("{needle}/")))
        })
    }

    #[test]
    fn view_never_mentions_secrets() {
        assert!(!mentions(&rules_of("view"), "secrets"));
    }

    #[test]
    fn view_and_edit_never_mention_rbac_objects() {
        for role in ["view", "edit"] {
            let rules = rules_of(role);
            assert!(!mentions(&rules, "roles"), "{role}");
            assert!(!mentions(&rules, "rolebindings"), "{role}");
            assert!(
                rules.iter().all(|r| !r
                    .api_groups
                    .iter()
                    .flatten()
                    .any(|g| g == RBAC_API_GROUP || g == "*")),
                "{role}"
            );
        }
        assert!(mentions(&rules_of("admin"), "roles"));
        assert!(mentions(&rules_of("admin"), "rolebindings"));
    }

    #[test]
    fn every_default_role_carries_bootstrap_metadata() {
        let roles = default_cluster_roles();
        let names: Vec<_> = roles
            .iter()
            .filter_map(|r| r.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            ["cluster-admin", "admin", "edit", "view", "system:node"]
        );
        for role in &roles {
            let labels = role.metadata.labels.as_ref().expect("labels");
            assert_eq!(
                labels
                    .get("kubernetes.io/bootstrapping")
                    .map(String::as_str),
                Some("rbac-defaults")
            );
        }
        let cluster_admin = rules_of("cluster-admin");
        assert!(cluster_admin
            .iter()
            .any(|r| r.non_resource_urls.as_deref() == Some(&["*".to_owned()][..])));
    }

    #[test]
    fn system_masters_is_bound_to_cluster_admin() {
        let bindings = default_cluster_role_bindings();
        assert_eq!(bindings.len(), 1);
        let b = &bindings[0];
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(b.role_ref.name, "cluster-admin");
        let subjects = b.subjects.as_deref().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "Group");
        assert_eq!(subjects[0].name, SUPERUSER_GROUP);
    }
}
