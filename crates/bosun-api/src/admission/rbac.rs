//! rbac/v1 Role, ClusterRole, RoleBinding and ClusterRoleBinding.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::validate_label_selector;
use super::names::{dns1123_subdomain_errors, path_segment_name_errors};
use super::{path_segment_name, validate_meta_update, validate_object_meta, Admit, FieldError};

/// The API group of RBAC objects, the only one a roleRef may name.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn validate_rules(rules: &[PolicyRule], namespaced: bool, errs: &mut Vec<FieldError>) {
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        if !urls.is_empty() {
            if namespaced {
                errs.push(FieldError::invalid_json(
                    format!("{p}.nonResourceURLs"),
                    urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !groups.is_empty() || !resources.is_empty() {
                errs.push(FieldError::invalid_json(
                    format!("{p}.nonResourceURLs"),
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if groups.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if resources.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

fn validate_role_ref(role_ref: &RoleRef, kinds: &[&str], errs: &mut Vec<FieldError>) {
    if role_ref.api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[RBAC_GROUP],
        ));
    }
    if !kinds.contains(&role_ref.kind.as_str()) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &role_ref.kind,
            kinds,
        ));
    }
    if role_ref.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for msg in path_segment_name_errors(&role_ref.name) {
            errs.push(FieldError::invalid("roleRef.name", &role_ref.name, msg));
        }
    }
}

fn validate_subjects(subjects: &[Subject], namespaced: bool, errs: &mut Vec<FieldError>) {
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or("");
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() {
                    for msg in dns1123_subdomain_errors(&s.name) {
                        errs.push(FieldError::invalid(format!("{p}.name"), &s.name, msg));
                    }
                }
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        group,
                        &[""],
                    ));
                }
                if !namespaced && s.namespace.as_deref().is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// A RoleBinding or ClusterRoleBinding: its metadata, a roleRef to one of `kinds`, and its
/// subjects (a namespaced binding's ServiceAccounts may leave their namespace out).
fn validate_binding(
    meta: &ObjectMeta,
    role_ref: &RoleRef,
    subjects: Option<&[Subject]>,
    kinds: &[&str],
    namespaced: bool,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta(meta, "metadata", path_segment_name);
    validate_role_ref(role_ref, kinds, &mut errs);
    validate_subjects(subjects.unwrap_or_default(), namespaced, &mut errs);
    errs
}

/// A binding update: the metadata's rules, and the roleRef never changes.
fn validate_binding_update(
    (new_meta, new_ref): (&ObjectMeta, &RoleRef),
    (old_meta, old_ref): (&ObjectMeta, &RoleRef),
) -> Vec<FieldError> {
    let mut errs = validate_meta_update(new_meta, old_meta);
    if new_ref != old_ref {
        errs.push(FieldError::immutable("roleRef", new_ref));
    }
    errs
}

impl Admit for Role {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", path_segment_name);
        validate_rules(self.rules.as_deref().unwrap_or_default(), true, &mut errs);
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

impl Admit for ClusterRole {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", path_segment_name);
        validate_rules(self.rules.as_deref().unwrap_or_default(), false, &mut errs);
        if let Some(aggregation) = &self.aggregation_rule {
            let selectors = aggregation
                .cluster_role_selectors
                .as_deref()
                .unwrap_or_default();
            if selectors.is_empty() {
                errs.push(FieldError::required(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, sel) in selectors.iter().enumerate() {
                errs.extend(validate_label_selector(
                    sel,
                    &format!("aggregationRule.clusterRoleSelectors[{i}]"),
                ));
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

impl Admit for RoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        validate_binding(
            &self.metadata,
            &self.role_ref,
            self.subjects.as_deref(),
            &["Role", "ClusterRole"],
            true,
        )
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_binding_update(
            (&self.metadata, &self.role_ref),
            (&old.metadata, &old.role_ref),
        )
    }
}

impl Admit for ClusterRoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        validate_binding(
            &self.metadata,
            &self.role_ref,
            self.subjects.as_deref(),
            &["ClusterRole"],
            false,
        )
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_binding_update(
            (&self.metadata, &self.role_ref),
            (&old.metadata, &old.role_ref),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{fields, meta};
    use crate::admission::FieldErrorKind;
    use k8s_openapi::api::rbac::v1::AggregationRule;

    fn rule(groups: &[&str], resources: &[&str], urls: &[&str], verbs: &[&str]) -> PolicyRule {
        let list = |v: &[&str]| {
            if v.is_empty() {
                None
            } else {
                Some(v.iter().map(|s| s.to_string()).collect())
            }
        };
        PolicyRule {
            api_groups: list(groups),
            resources: list(resources),
            non_resource_urls: list(urls),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: None,
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
        Subject {
            api_group: if kind == "ServiceAccount" {
                None
            } else {
                Some(RBAC_GROUP.into())
            },
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.map(Into::into),
        }
    }

    #[test]
    fn a_role_with_resource_rules_is_valid() {
        let role = Role {
            metadata: meta("pod-reader"),
            rules: Some(vec![rule(
                &[""],
                &["pods", "pods/log"],
                &[],
                &["get", "list"],
            )]),
        };
        assert_eq!(role.validate(), vec![]);
    }

    #[test]
    fn role_rules_need_verbs_groups_and_resources_and_no_urls() {
        let role = Role {
            metadata: meta("bad"),
            rules: Some(vec![
                rule(&[], &[], &[], &[]),
                rule(&[], &[], &["/healthz"], &["get"]),
            ]),
        };
        assert_eq!(
            fields(&role.validate()),
            [
                "rules[0].verbs",
                "rules[0].apiGroups",
                "rules[0].resources",
                "rules[1].nonResourceURLs",
            ]
        );
    }

    #[test]
    fn cluster_roles_may_use_non_resource_urls_but_not_mixed() {
        let ok = ClusterRole {
            metadata: meta("system:health"),
            rules: Some(vec![rule(&[], &[], &["/healthz", "/version"], &["get"])]),
            aggregation_rule: None,
        };
        assert_eq!(ok.validate(), vec![]);
        let mixed = ClusterRole {
            metadata: meta("mixed"),
            rules: Some(vec![rule(&[""], &["pods"], &["/healthz"], &["get"])]),
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: None,
            }),
        };
        assert_eq!(
            fields(&mixed.validate()),
            [
                "rules[0].nonResourceURLs",
                "aggregationRule.clusterRoleSelectors"
            ]
        );
    }

    #[test]
    fn rbac_names_may_hold_colons_but_not_slashes_or_percent() {
        for bad in ["a/b", "a%b", ".", ".."] {
            let role = Role {
                metadata: meta(bad),
                rules: None,
            };
            assert_eq!(fields(&role.validate()), ["metadata.name"], "{bad}");
        }
        let empty = Role {
            metadata: meta(""),
            rules: None,
        };
        assert_eq!(empty.validate()[0].kind, FieldErrorKind::Required);
    }

    #[test]
    fn a_role_binding_to_a_cluster_role_is_valid() {
        let rb = RoleBinding {
            metadata: meta("read-pods"),
            role_ref: role_ref("ClusterRole", "view"),
            subjects: Some(vec![
                subject("User", "jane", None),
                subject("Group", "devs", None),
                subject("ServiceAccount", "builder", None),
            ]),
        };
        assert_eq!(rb.validate(), vec![]);
    }

    #[test]
    fn bindings_check_role_ref_and_subjects() {
        let mut bad_ref = role_ref("Role", "");
        bad_ref.api_group = "rbac".into();
        let crb = ClusterRoleBinding {
            metadata: meta("admins"),
            role_ref: bad_ref,
            subjects: Some(vec![
                subject("ServiceAccount", "builder", None),
                subject("Robot", "r2", None),
                Subject {
                    api_group: None,
                    kind: "User".into(),
                    name: String::new(),
                    namespace: None,
                },
            ]),
        };
        assert_eq!(
            fields(&crb.validate()),
            [
                "roleRef.apiGroup",
                "roleRef.kind",
                "roleRef.name",
                "subjects[0].namespace",
                "subjects[1].kind",
                "subjects[2].name",
                "subjects[2].apiGroup",
            ]
        );
    }

    #[test]
    fn a_role_binding_to_a_pod_is_refused() {
        let rb = RoleBinding {
            metadata: meta("odd"),
            role_ref: role_ref("Pod", "web"),
            subjects: None,
        };
        let errs = rb.validate();
        assert_eq!(
            errs[0].to_string(),
            r#"roleRef.kind: Unsupported value: "Pod": supported values: "Role", "ClusterRole""#
        );
    }

    #[test]
    fn a_cluster_role_binding_with_namespaced_service_account_is_valid() {
        let crb = ClusterRoleBinding {
            metadata: meta("system:controllers"),
            role_ref: role_ref("ClusterRole", "cluster-admin"),
            subjects: Some(vec![
                subject("ServiceAccount", "controller", Some("kube-system")),
                subject("Group", "system:masters", None),
            ]),
        };
        assert_eq!(crb.validate(), vec![]);
    }

    #[test]
    fn role_ref_is_immutable() {
        let old = RoleBinding {
            metadata: meta("b"),
            role_ref: role_ref("Role", "a"),
            subjects: None,
        };
        let mut new = old.clone();
        new.subjects = Some(vec![subject("User", "jane", None)]);
        assert_eq!(new.validate_update(&old), vec![]);
        new.role_ref.name = "b".into();
        let errs = new.validate_update(&old);
        assert_eq!(fields(&errs), ["roleRef"]);
        assert_eq!(errs[0].kind, FieldErrorKind::Immutable);
        let old_c = ClusterRoleBinding {
            metadata: meta("c"),
            role_ref: role_ref("ClusterRole", "view"),
            subjects: None,
        };
        let mut new_c = old_c.clone();
        new_c.role_ref.name = "edit".into();
        assert_eq!(fields(&new_c.validate_update(&old_c)), ["roleRef"]);
    }
}
