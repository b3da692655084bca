//! Authorization: Kubernetes RBAC, and Kubernetes' node authorizer (simplified).
//!
//! Where to start: the server authenticates a request ([`UserInfo`] from the client
//! certificate), describes it as [`Attributes`] and asks
//!
//! 1. [`authorize_node`] when [`node_name`] says the user is a node (`system:node:<name>` in
//!    group `system:nodes`): a node may touch only its own Node, its Lease and the pods bound
//!    to it;
//! 2. otherwise [`RbacSnapshot::authorize`], which evaluates the Role, ClusterRole,
//!    RoleBinding and ClusterRoleBinding objects as Kubernetes does. Members of
//!    [`SUPERUSER_GROUP`] are always allowed.
//!
//! The snapshot is immutable and cheap to clone; the server rebuilds it with
//! [`RbacSnapshot::new`] when an RBAC object changes. Every cluster starts with
//! [`default_cluster_roles`] (cluster-admin, admin, edit, view, system:node) and
//! [`default_cluster_role_bindings`] (cluster-admin to `system:masters`).
//!
//! Not implemented: aggregated ClusterRoles (the defaults list their rules explicitly), the
//! `bind`/`escalate` checks that stop a user from granting more than they hold, and
//! non-resource URLs (bosun's API has none).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

mod defaults;
mod node;

pub use defaults::{default_cluster_role_bindings, default_cluster_roles};
pub use node::{authorize_node, node_name, NODES_GROUP, NODE_LEASE_NAMESPACE, NODE_USER_PREFIX};

/// Members of this group may do anything, whatever the RBAC objects say.
pub const SUPERUSER_GROUP: &str = "system:masters";

/// The group every authenticated user belongs to; the caller adds it to [`UserInfo::groups`].
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The API group of the RBAC objects, the only one a `roleRef` may name.
pub const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";

/// User names of service accounts: `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name: the CN of the client certificate.
    pub name: String,
    /// The groups: each O of the client certificate, plus [`AUTHENTICATED_GROUP`] added by
    /// the caller.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with these groups.
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        UserInfo {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the user belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What is asked, as Kubernetes' authorizer attributes of a resource request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// "" for the core group, else `apps`, `batch`, `coordination.k8s.io`, ….
    pub api_group: String,
    /// The plural resource name, such as `pods`.
    pub resource: String,
    /// "" or a subresource: `status`, `log`, `exec`, `binding`, `eviction`, `scale`.
    pub subresource: String,
    /// "" for cluster-scoped resources and for lists across all namespaces. As in
    /// Kubernetes, a request on a Namespace object carries its name here too, so that a
    /// RoleBinding in a namespace can grant reading that namespace.
    pub namespace: String,
    /// The object's name; "" for list, watch, deletecollection and create without a name.
    pub name: String,
}

impl Attributes {
    /// The resource as RBAC rules name it: `pods`, or `pods/status` for a subresource.
    pub fn resource_path(&self) -> Cow<'_, str> {
        if self.subresource.is_empty() {
            Cow::Borrowed(&self.resource)
        } else {
            Cow::Owned(format!("{}/{}", self.resource, self.subresource))
        }
    }

    /// `cannot list resource "pods" in API group "" in the namespace "web"`, Kubernetes'
    /// wording after the subject.
    fn cannot(&self) -> String {
        format!(
            "cannot {} resource {:?} in API group {:?} {}",
            self.verb,
            self.resource_path(),
            self.api_group,
            Scope(&self.namespace)
        )
    }
}

/// `in the namespace "web"` or `at the cluster scope`.
struct Scope<'a>(&'a str);

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("at the cluster scope")
        } else {
            write!(f, "in the namespace {:?}", self.0)
        }
    }
}

/// The answer of an authorizer, with the reason (for the audit log and the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed; the string says which rule allowed it.
    Allow(String),
    /// The request is refused; the string is the message for the client, in Kubernetes'
    /// wording: `User "alice" cannot list resource "pods" in API group "" in the namespace "web"`.
    Deny(String),
}

impl Decision {
    /// Whether the request may proceed.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// Why it was allowed or denied.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow(why) | Decision::Deny(why) => why,
        }
    }
}

/// A consistent view of the RBAC objects, indexed for lookup, rebuilt by the caller when they
/// change. Cloning is cheap (one reference count).
#[derive(Debug, Default, Clone)]
pub struct RbacSnapshot {
    index: Arc<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// Role rules by (namespace, name).
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    /// ClusterRole rules by name.
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// ClusterRoleBindings: grant everywhere.
    cluster_bindings: Bindings,
    /// RoleBindings by namespace: grant in that namespace only.
    role_bindings: HashMap<String, Bindings>,
}

/// Bindings of one scope, indexed by subject.
#[derive(Debug, Default)]
struct Bindings {
    list: Vec<Binding>,
    by_subject: HashMap<SubjectKey, Vec<usize>>,
}

#[derive(Debug)]
struct Binding {
    /// `name` for a ClusterRoleBinding, `namespace/name` for a RoleBinding, for reasons.
    name: String,
    role: RoleTarget,
}

/// What a binding's `roleRef` points at.
#[derive(Debug)]
enum RoleTarget {
    /// A Role in the binding's own namespace.
    Role(String),
    /// A ClusterRole.
    ClusterRole(String),
}

/// A subject reduced to what it matches: a user name (service accounts become theirs) or a
/// group name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubjectKey {
    User(String),
    Group(String),
}

impl fmt::Display for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectKey::User(name) => write!(f, "User {name:?}"),
            SubjectKey::Group(name) => write!(f, "Group {name:?}"),
        }
    }
}

impl SubjectKey {
    /// The key of a subject; `binding_namespace` is the namespace a ServiceAccount subject
    /// without one defaults to (RoleBindings only, as in Kubernetes).
    fn of(subject: &Subject, binding_namespace: Option<&str>) -> Option<Self> {
        match subject.kind.as_str() {
            "User" => Some(SubjectKey::User(subject.name.clone())),
            "Group" => Some(SubjectKey::Group(subject.name.clone())),
            "ServiceAccount" => {
                let namespace = subject
                    .namespace
                    .as_deref()
                    .filter(|ns| !ns.is_empty())
                    .or(binding_namespace)?;
                Some(SubjectKey::User(format!(
                    "{SERVICE_ACCOUNT_PREFIX}{namespace}:{}",
                    subject.name
                )))
            }
            other => {
                tracing::debug!(kind = %other, name = %subject.name, "ignoring rbac subject of unknown kind");
                None
            }
        }
    }
}

impl Bindings {
    fn add(
        &mut self,
        name: String,
        role_ref: &RoleRef,
        subjects: Option<&[Subject]>,
        namespace: Option<&str>,
    ) {
        let role = match (role_ref.api_group.as_str(), role_ref.kind.as_str()) {
            (RBAC_API_GROUP, "ClusterRole") => RoleTarget::ClusterRole(role_ref.name.clone()),
            // A ClusterRoleBinding cannot reference a Role.
            (RBAC_API_GROUP, "Role") if namespace.is_some() => {
                RoleTarget::Role(role_ref.name.clone())
            }
            _ => {
                tracing::debug!(binding = %name, kind = %role_ref.kind, api_group = %role_ref.api_group, "ignoring rbac binding with an invalid roleRef");
                return;
            }
        };
        let at = self.list.len();
        self.list.push(Binding { name, role });
        for subject in subjects.unwrap_or_default() {
            if let Some(key) = SubjectKey::of(subject, namespace) {
                let entries = self.by_subject.entry(key).or_default();
                if entries.last() != Some(&at) {
                    entries.push(at);
                }
            }
        }
    }
}

impl RbacSnapshot {
    /// Indexes the RBAC objects. Objects without a name (and Roles and RoleBindings without a
    /// namespace) are ignored, as are bindings whose `roleRef` is not a Role or ClusterRole
    /// of `rbac.authorization.k8s.io`; a binding to a role that does not exist grants nothing.
    pub fn new(
        roles: Vec<Role>,
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Self {
        let mut index = Index::default();
        for role in roles {
            if let (Some(ns), Some(name)) = (role.metadata.namespace, role.metadata.name) {
                index
                    .roles
                    .insert((ns, name), role.rules.unwrap_or_default());
            }
        }
        for role in cluster_roles {
            if let Some(name) = role.metadata.name {
                index
                    .cluster_roles
                    .insert(name, role.rules.unwrap_or_default());
            }
        }
        for binding in role_bindings {
            let (Some(ns), Some(name)) = (&binding.metadata.namespace, &binding.metadata.name)
            else {
                continue;
            };
            index.role_bindings.entry(ns.clone()).or_default().add(
                format!("{name}/{ns}"),
                &binding.role_ref,
                binding.subjects.as_deref(),
                Some(ns),
            );
        }
        for binding in cluster_role_bindings {
            let Some(name) = &binding.metadata.name else {
                continue;
            };
            index.cluster_bindings.add(
                name.clone(),
                &binding.role_ref,
                binding.subjects.as_deref(),
                None,
            );
        }
        RbacSnapshot {
            index: Arc::new(index),
        }
    }

    /// Decides a request as Kubernetes' RBAC authorizer does: allowed when the user is in
    /// [`SUPERUSER_GROUP`], or when a ClusterRoleBinding (anywhere) or a RoleBinding in
    /// `attrs.namespace` binds the user or one of their groups to a role with a rule that
    /// covers the request. Denied otherwise; there are no deny rules.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if user.in_group(SUPERUSER_GROUP) {
            return Decision::Allow(format!(
                "user {:?} is in group {SUPERUSER_GROUP:?}",
                user.name
            ));
        }
        let index = &self.index;
        if let Some(why) = index.allows(
            &index.cluster_bindings,
            "ClusterRoleBinding",
            None,
            user,
            attrs,
        ) {
            return Decision::Allow(why);
        }
        if !attrs.namespace.is_empty() {
            if let Some(bindings) = index.role_bindings.get(&attrs.namespace) {
                if let Some(why) =
                    index.allows(bindings, "RoleBinding", Some(&attrs.namespace), user, attrs)
                {
                    return Decision::Allow(why);
                }
            }
        }
        Decision::Deny(format!("User {:?} {}", user.name, attrs.cannot()))
    }
}

impl Index {
    /// The reason, if one of `bindings` that applies to `user` grants the request.
    fn allows(
        &self,
        bindings: &Bindings,
        binding_kind: &str,
        namespace: Option<&str>,
        user: &UserInfo,
        attrs: &Attributes,
    ) -> Option<String> {
        let keys = std::iter::once(SubjectKey::User(user.name.clone()))
            .chain(user.groups.iter().cloned().map(SubjectKey::Group));
        let mut seen = vec![false; bindings.list.len()];
        for key in keys {
            for &at in bindings.by_subject.get(&key).into_iter().flatten() {
                if std::mem::replace(&mut seen[at], true) {
                    continue;
                }
                let binding = &bindings.list[at];
                let (rules, role) = match (&binding.role, namespace) {
                    (RoleTarget::ClusterRole(name), _) => (
                        self.cluster_roles.get(name),
                        format!("ClusterRole {name:?}"),
                    ),
                    (RoleTarget::Role(name), Some(ns)) => (
                        self.roles.get(&(ns.to_owned(), name.clone())),
                        format!("Role {:?}", format!("{name}/{ns}")),
                    ),
                    (RoleTarget::Role(_), None) => continue,
                };
                if rules.is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, attrs))) {
                    return Some(format!(
                        "RBAC: allowed by {binding_kind} {:?} of {role} to {key}",
                        binding.name
                    ));
                }
            }
        }
        None
    }
}

/// Whether one policy rule covers a resource request.
fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    contains_or_star(&rule.verbs, &attrs.verb)
        && rule
            .api_groups
            .as_deref()
            .is_some_and(|groups| contains_or_star(groups, &attrs.api_group))
        && rule
            .resources
            .as_deref()
            .is_some_and(|resources| resources.iter().any(|r| resource_matches(r, attrs)))
        && names_match(rule.resource_names.as_deref(), &attrs.name)
}

fn contains_or_star(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

/// `*` covers every resource and subresource; `pods` covers only the resource itself;
/// `pods/status` that subresource; `*/status` the `status` subresource of every resource.
fn resource_matches(rule_resource: &str, attrs: &Attributes) -> bool {
    if rule_resource == "*" {
        return true;
    }
    if attrs.subresource.is_empty() {
        return rule_resource == attrs.resource;
    }
    match rule_resource.split_once('/') {
        Some((resource, subresource)) => {
            (resource == attrs.resource || resource == "*") && subresource == attrs.subresource
        }
        None => false,
    }
}

/// A rule listing resource names covers only requests for one of those names; requests
/// without a name (list, watch, create without a name) are not covered.
fn names_match(rule_names: Option<&[String]>, name: &str) -> bool {
    match rule_names {
        None | Some([]) => true,
        Some(names) => !name.is_empty() && names.iter().any(|n| n == name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str) -> Subject {
        Subject {
            api_group: (kind != "ServiceAccount").then(|| RBAC_API_GROUP.to_string()),
            kind: kind.into(),
            name: name.into(),
            namespace: None,
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: RBAC_API_GROUP.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn role_binding(
        ns: &str,
        name: &str,
        kind: &str,
        role: &str,
        subjects: Vec<Subject>,
    ) -> RoleBinding {
        RoleBinding {
            metadata: meta(Some(ns), name),
            role_ref: role_ref(kind, role),
            subjects: Some(subjects),
        }
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(strings(groups)),
            resources: Some(strings(resources)),
            verbs: strings(verbs),
            ..Default::default()
        }
    }

    fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        Role {
            metadata: meta(Some(ns), name),
            rules: Some(rules),
        }
    }

    fn user(name: &str) -> UserInfo {
        UserInfo::new(name, [AUTHENTICATED_GROUP])
    }

    /// Request attributes (shared with the node authorizer's tests).
    pub(super) fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// The same attributes on a subresource.
    pub(super) fn sub(mut a: Attributes, subresource: &str) -> Attributes {
        a.subresource = subresource.into();
        a
    }

    /// Default roles and bindings, plus ann (admin), ed (edit), vic (view) in "web".
    fn defaults_with(roles: Vec<Role>, mut bindings: Vec<RoleBinding>) -> RbacSnapshot {
        bindings.extend([
            role_binding(
                "web",
                "ann-admin",
                "ClusterRole",
                "admin",
                vec![subject("User", "ann")],
            ),
            role_binding(
                "web",
                "ed-edit",
                "ClusterRole",
                "edit",
                vec![subject("User", "ed")],
            ),
            role_binding(
                "web",
                "vic-view",
                "ClusterRole",
                "view",
                vec![subject("User", "vic")],
            ),
        ]);
        RbacSnapshot::new(
            roles,
            default_cluster_roles(),
            bindings,
            default_cluster_role_bindings(),
        )
    }

    #[test]
    fn admin_edit_view_and_nobody_get_what_kubernetes_gives_them() {
        let rbac = defaults_with(vec![], vec![]);
        let resources = [
            ("", "pods"),
            ("apps", "deployments"),
            ("", "secrets"),
            (RBAC_API_GROUP, "roles"),
        ];
        let verbs = ["get", "list", "create", "update", "delete"];
        // Whether each role may do a verb on a resource in its own namespace.
        let allowed_in_web = |who: &str, resource: &str, verb: &str| match who {
            "ann" => true,
            "ed" => resource != "roles",
            "vic" => matches!(resource, "pods" | "deployments") && matches!(verb, "get" | "list"),
            _ => false,
        };
        let mut checked = 0;
        for who in ["ann", "ed", "vic", "nobody"] {
            for (group, resource) in resources {
                for verb in verbs {
                    for ns in ["web", "other", ""] {
                        let name = if matches!(verb, "list" | "create") {
                            ""
                        } else {
                            "x"
                        };
                        let a = attrs(verb, group, resource, ns, name);
                        let want = ns == "web" && allowed_in_web(who, resource, verb);
                        let got = rbac.authorize(&user(who), &a);
                        assert_eq!(
                            got.allowed(),
                            want,
                            "{who} {verb} {resource} in {ns:?}: {got:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 4 * 4 * 5 * 3);
    }

    #[test]
    fn denial_uses_kubernetes_wording() {
        let rbac = defaults_with(vec![], vec![]);
        let d = rbac.authorize(&user("alice"), &attrs("list", "", "pods", "web", ""));
        assert_eq!(
            d,
            Decision::Deny(r#"User "alice" cannot list resource "pods" in API group "" in the namespace "web""#.into())
        );
        let d = rbac.authorize(
            &user("alice"),
            &attrs("create", "apps", "deployments", "", ""),
        );
        assert_eq!(
            d.reason(),
            r#"User "alice" cannot create resource "deployments" in API group "apps" at the cluster scope"#
        );
        let d = rbac.authorize(
            &user("vic"),
            &sub(attrs("create", "", "pods", "web", "p"), "exec"),
        );
        assert_eq!(
            d.reason(),
            r#"User "vic" cannot create resource "pods/exec" in API group "" in the namespace "web""#
        );
    }

    #[test]
    fn allow_reason_names_the_binding_role_and_subject() {
        let rbac = defaults_with(vec![], vec![]);
        let d = rbac.authorize(&user("ed"), &attrs("get", "", "pods", "web", "p"));
        assert_eq!(
            d,
            Decision::Allow(
                r#"RBAC: allowed by RoleBinding "ed-edit/web" of ClusterRole "edit" to User "ed""#
                    .into()
            )
        );
    }

    #[test]
    fn subresources_need_their_own_rules() {
        let rbac = defaults_with(vec![], vec![]);
        let pod = |verb: &str, sr: &str| sub(attrs(verb, "", "pods", "web", "p"), sr);
        assert!(rbac.authorize(&user("vic"), &pod("get", "log")).allowed());
        assert!(rbac
            .authorize(&user("vic"), &pod("get", "status"))
            .allowed());
        assert!(!rbac
            .authorize(&user("vic"), &pod("create", "exec"))
            .allowed());
        assert!(rbac
            .authorize(&user("ed"), &pod("create", "exec"))
            .allowed());
        assert!(!rbac
            .authorize(&user("ed"), &pod("update", "status"))
            .allowed());
        let scale = |verb: &str| sub(attrs(verb, "apps", "deployments", "web", "d"), "scale");
        assert!(rbac.authorize(&user("vic"), &scale("get")).allowed());
        assert!(!rbac.authorize(&user("vic"), &scale("update")).allowed());
        assert!(rbac.authorize(&user("ed"), &scale("update")).allowed());
        assert!(rbac.authorize(&user("ann"), &scale("patch")).allowed());
    }

    #[test]
    fn wildcard_and_star_slash_subresource_rules_match() {
        let roles = vec![
            role(
                "web",
                "statuses",
                vec![rule(&["*"], &["*/status"], &["update"])],
            ),
            role("web", "anything", vec![rule(&["apps"], &["*"], &["*"])]),
        ];
        let bindings = vec![
            role_binding("web", "s", "Role", "statuses", vec![subject("User", "s")]),
            role_binding("web", "a", "Role", "anything", vec![subject("User", "a")]),
        ];
        let rbac = defaults_with(roles, bindings);
        let status =
            |group: &str, res: &str| sub(attrs("update", group, res, "web", "x"), "status");
        assert!(rbac.authorize(&user("s"), &status("", "pods")).allowed());
        assert!(rbac
            .authorize(&user("s"), &status("apps", "deployments"))
            .allowed());
        assert!(!rbac
            .authorize(&user("s"), &attrs("update", "", "pods", "web", "x"))
            .allowed());
        assert!(!rbac
            .authorize(
                &user("s"),
                &sub(attrs("update", "apps", "deployments", "web", "x"), "scale")
            )
            .allowed());
        assert!(rbac
            .authorize(
                &user("a"),
                &attrs("deletecollection", "apps", "replicasets", "web", "")
            )
            .allowed());
        assert!(rbac
            .authorize(
                &user("a"),
                &sub(attrs("update", "apps", "deployments", "web", "x"), "scale")
            )
            .allowed());
        assert!(!rbac
            .authorize(&user("a"), &attrs("get", "", "pods", "web", "x"))
            .allowed());
    }

    #[test]
    fn resource_names_restrict_only_named_requests() {
        let mut only = rule(&[""], &["configmaps"], &["get", "update", "list", "create"]);
        only.resource_names = Some(vec!["app-config".into()]);
        let rbac = defaults_with(
            vec![role("web", "one-config", vec![only])],
            vec![role_binding(
                "web",
                "c",
                "Role",
                "one-config",
                vec![subject("User", "c")],
            )],
        );
        let cm = |verb: &str, name: &str| attrs(verb, "", "configmaps", "web", name);
        assert!(rbac
            .authorize(&user("c"), &cm("get", "app-config"))
            .allowed());
        assert!(rbac
            .authorize(&user("c"), &cm("update", "app-config"))
            .allowed());
        assert!(!rbac.authorize(&user("c"), &cm("get", "other")).allowed());
        assert!(!rbac.authorize(&user("c"), &cm("list", "")).allowed());
        assert!(!rbac.authorize(&user("c"), &cm("create", "")).allowed());
        assert!(!rbac
            .authorize(&user("c"), &cm("delete", "app-config"))
            .allowed());
    }

    #[test]
    fn a_role_in_another_namespace_does_not_leak() {
        let roles = vec![
            role("other", "reader", vec![rule(&[""], &["pods"], &["get"])]),
            role("web", "reader", vec![rule(&[""], &["services"], &["get"])]),
        ];
        let bindings = vec![
            // Binds "reader" in web: web's reader, not other's.
            role_binding("web", "r", "Role", "reader", vec![subject("User", "r")]),
            // Binds a Role that exists only in "other".
            role_binding(
                "web",
                "missing",
                "Role",
                "only-in-other",
                vec![subject("User", "m")],
            ),
            role_binding("other", "o", "Role", "reader", vec![subject("User", "o")]),
        ];
        let mut roles = roles;
        roles.push(role(
            "other",
            "only-in-other",
            vec![rule(&["*"], &["*"], &["*"])],
        ));
        let rbac = defaults_with(roles, bindings);
        assert!(!rbac
            .authorize(&user("r"), &attrs("get", "", "pods", "web", "p"))
            .allowed());
        assert!(rbac
            .authorize(&user("r"), &attrs("get", "", "services", "web", "s"))
            .allowed());
        assert!(!rbac
            .authorize(&user("r"), &attrs("get", "", "pods", "other", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("m"), &attrs("get", "", "pods", "web", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("m"), &attrs("get", "", "pods", "other", "p"))
            .allowed());
        assert!(rbac
            .authorize(&user("o"), &attrs("get", "", "pods", "other", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("o"), &attrs("get", "", "pods", "web", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("o"), &attrs("list", "", "pods", "", ""))
            .allowed());
    }

    #[test]
    fn a_role_binding_to_a_cluster_role_grants_only_in_its_namespace() {
        let rbac = defaults_with(vec![], vec![]);
        assert!(rbac
            .authorize(&user("ann"), &attrs("delete", "", "pods", "web", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("ann"), &attrs("delete", "", "pods", "other", "p"))
            .allowed());
        assert!(!rbac
            .authorize(&user("ann"), &attrs("list", "", "pods", "", ""))
            .allowed());
        assert!(!rbac
            .authorize(&user("ann"), &attrs("get", "", "nodes", "", "n1"))
            .allowed());
        // Reading its own namespace, which the caller reports with namespace = name.
        assert!(rbac
            .authorize(&user("vic"), &attrs("get", "", "namespaces", "web", "web"))
            .allowed());
        assert!(!rbac
            .authorize(
                &user("vic"),
                &attrs("get", "", "namespaces", "other", "other")
            )
            .allowed());
        assert!(!rbac
            .authorize(
                &user("ann"),
                &attrs("delete", "", "namespaces", "web", "web")
            )
            .allowed());
    }

    #[test]
    fn superusers_may_do_anything() {
        let rbac = RbacSnapshot::default();
        let root = UserInfo::new("root", [SUPERUSER_GROUP, AUTHENTICATED_GROUP]);
        for a in [
            attrs("delete", "", "nodes", "", "n1"),
            attrs("create", RBAC_API_GROUP, "clusterroles", "", ""),
            sub(attrs("update", "", "pods", "web", "p"), "status"),
        ] {
            assert!(rbac.authorize(&root, &a).allowed(), "{a:?}");
        }
        assert!(!rbac
            .authorize(&user("root"), &attrs("get", "", "pods", "web", "p"))
            .allowed());
    }

    #[test]
    fn cluster_role_bindings_grant_everywhere() {
        let rbac = RbacSnapshot::new(
            vec![],
            default_cluster_roles(),
            vec![],
            vec![
                ClusterRoleBinding {
                    metadata: meta(None, "ops-admin"),
                    role_ref: role_ref("ClusterRole", "cluster-admin"),
                    subjects: Some(vec![subject("Group", "ops")]),
                },
                ClusterRoleBinding {
                    metadata: meta(None, "auditor-view"),
                    role_ref: role_ref("ClusterRole", "view"),
                    subjects: Some(vec![subject("User", "auditor")]),
                },
            ],
        );
        let op = UserInfo::new("olga", ["ops", AUTHENTICATED_GROUP]);
        let d = rbac.authorize(&op, &attrs("delete", "", "nodes", "", "n1"));
        assert_eq!(
            d.reason(),
            r#"RBAC: allowed by ClusterRoleBinding "ops-admin" of ClusterRole "cluster-admin" to Group "ops""#
        );
        assert!(rbac
            .authorize(&op, &attrs("create", "batch", "jobs", "any", ""))
            .allowed());
        let auditor = user("auditor");
        assert!(rbac
            .authorize(&auditor, &attrs("list", "", "pods", "", ""))
            .allowed());
        assert!(rbac
            .authorize(&auditor, &attrs("list", "apps", "deployments", "web", ""))
            .allowed());
        assert!(!rbac
            .authorize(&auditor, &attrs("list", "", "secrets", "", ""))
            .allowed());
        assert!(!rbac
            .authorize(&auditor, &attrs("delete", "", "pods", "web", "p"))
            .allowed());
    }

    #[test]
    fn default_binding_makes_system_masters_cluster_admin() {
        // Even without the superuser shortcut, the bootstrapped binding grants it.
        let bindings = default_cluster_role_bindings();
        let rbac = RbacSnapshot::new(vec![], default_cluster_roles(), vec![], bindings);
        let index = &rbac.index;
        let master = UserInfo::new("m", [SUPERUSER_GROUP]);
        let why = index.allows(
            &index.cluster_bindings,
            "ClusterRoleBinding",
            None,
            &master,
            &attrs("delete", "anything.example.com", "widgets", "", "w"),
        );
        assert!(why.is_some_and(|w| w.contains(r#"ClusterRole "cluster-admin""#)));
    }

    #[test]
    fn group_and_service_account_subjects_match() {
        let mut sa_elsewhere = subject("ServiceAccount", "deployer");
        sa_elsewhere.namespace = Some("ci".into());
        let bindings = vec![
            role_binding(
                "web",
                "devs",
                "ClusterRole",
                "edit",
                vec![subject("Group", "devs")],
            ),
            role_binding(
                "web",
                "builder",
                "ClusterRole",
                "view",
                vec![subject("ServiceAccount", "builder")],
            ),
            role_binding("web", "deployer", "ClusterRole", "edit", vec![sa_elsewhere]),
        ];
        let rbac = defaults_with(vec![], bindings);
        let create_pod = attrs("create", "", "pods", "web", "");
        assert!(rbac
            .authorize(&UserInfo::new("dana", ["devs"]), &create_pod)
            .allowed());
        assert!(!rbac
            .authorize(&UserInfo::new("devs", ["others"]), &create_pod)
            .allowed());
        let get_pod = attrs("get", "", "pods", "web", "p");
        assert!(rbac
            .authorize(&user("system:serviceaccount:web:builder"), &get_pod)
            .allowed());
        assert!(!rbac
            .authorize(&user("system:serviceaccount:other:builder"), &get_pod)
            .allowed());
        assert!(!rbac.authorize(&user("builder"), &get_pod).allowed());
        assert!(rbac
            .authorize(&user("system:serviceaccount:ci:deployer"), &create_pod)
            .allowed());
        assert!(!rbac
            .authorize(&user("system:serviceaccount:web:deployer"), &create_pod)
            .allowed());
    }

    #[test]
    fn invalid_role_refs_and_missing_roles_grant_nothing() {
        let mut bad_group = role_binding(
            "web",
            "bad",
            "ClusterRole",
            "cluster-admin",
            vec![subject("User", "b")],
        );
        bad_group.role_ref.api_group = "example.com".into();
        let missing = role_binding(
            "web",
            "gone",
            "ClusterRole",
            "no-such-role",
            vec![subject("User", "g")],
        );
        let crb_to_role = ClusterRoleBinding {
            metadata: meta(None, "crb"),
            role_ref: role_ref("Role", "reader"),
            subjects: Some(vec![subject("User", "c")]),
        };
        let rbac = RbacSnapshot::new(
            vec![role(
                "web",
                "reader",
                vec![rule(&[""], &["pods"], &["get"])],
            )],
            default_cluster_roles(),
            vec![bad_group, missing],
            vec![crb_to_role],
        );
        for who in ["b", "g", "c"] {
            let d = rbac.authorize(&user(who), &attrs("get", "", "pods", "web", "p"));
            assert!(!d.allowed(), "{who}: {d:?}");
        }
    }

    #[test]
    fn cloned_snapshots_share_the_index() {
        let rbac = defaults_with(vec![], vec![]);
        let copy = rbac.clone();
        assert!(Arc::ptr_eq(&rbac.index, &copy.index));
        assert!(copy
            .authorize(&user("ann"), &attrs("get", "", "pods", "web", "p"))
            .allowed());
    }
}
