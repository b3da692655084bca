//! apps/v1 ReplicaSet, Deployment, DaemonSet and batch/v1 Job.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::Metadata;

use super::meta::{selector_is_empty, selector_matches, validate_label_selector};
use super::pod::{default_pod_spec, validate_pod_template, RESTART_POLICIES};
use super::{
    dns1123_subdomain, non_negative, validate_meta_update, validate_object_meta, Admit, FieldError,
    NON_NEGATIVE,
};

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = &mut template.spec {
        default_pod_spec(spec);
    }
}

/// Sets an unset or empty strategy `type_` to RollingUpdate; true when it is RollingUpdate.
fn default_to_rolling_update(type_: &mut Option<String>) -> bool {
    if type_.as_deref().is_none_or(str::is_empty) {
        *type_ = Some("RollingUpdate".into());
    }
    type_.as_deref() == Some("RollingUpdate")
}

/// The selector is valid, not empty, and selects the template's labels.
fn validate_selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    kind: &str,
    errs: &mut Vec<FieldError>,
) {
    if selector_is_empty(selector) {
        errs.push(FieldError::invalid_json(
            "spec.selector",
            selector,
            format!("empty selector is invalid for {kind}"),
        ));
        return;
    }
    errs.extend(validate_label_selector(selector, "spec.selector"));
    let empty = BTreeMap::new();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    if !selector_matches(selector, labels) {
        errs.push(FieldError::invalid_json(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        ));
    }
}

/// A workload's pod template: checked against the selector (when there is one), validated
/// as a pod template, and restarting only as `restart_policies` allow.
fn validate_workload_template(
    selector: Option<&LabelSelector>,
    template: &PodTemplateSpec,
    kind: &str,
    restart_policies: &[&str],
    errs: &mut Vec<FieldError>,
) {
    if let Some(selector) = selector {
        validate_selector_and_template(selector, template, kind, errs);
    }
    errs.extend(validate_pod_template(template, "spec.template"));
    validate_template_restart_policy(template, restart_policies, errs);
}

/// The pod template of a ReplicaSet, Deployment or DaemonSet: the selector is required and
/// the pods always restart.
fn validate_long_running_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    kind: &str,
    errs: &mut Vec<FieldError>,
) {
    validate_workload_template(Some(selector), template, kind, &["Always"], errs);
}

/// The template's restart policy is one of `allowed` (unset counts as the default, Always).
fn validate_template_restart_policy(
    template: &PodTemplateSpec,
    allowed: &[&str],
    errs: &mut Vec<FieldError>,
) {
    let path = "spec.template.spec.restartPolicy";
    match template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
    {
        None if allowed.contains(&"Always") => {}
        None => {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            errs.push(FieldError::required(
                path,
                format!("valid values: {}", list.join(", ")),
            ));
        }
        // Unknown policies are already reported by the pod spec validation.
        Some(p) if RESTART_POLICIES.contains(&p) && !allowed.contains(&p) => {
            errs.push(FieldError::not_supported(path, p, allowed));
        }
        Some(_) => {}
    }
}

/// An int ≥ 0 or a percentage `N%`; returns (value, is_percent) when well-formed.
fn validate_int_or_percent(
    value: &IntOrString,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<(i64, bool)> {
    match value {
        IntOrString::Int(n) => {
            if *n < 0 {
                errs.push(FieldError::invalid_number(
                    path,
                    i64::from(*n),
                    NON_NEGATIVE,
                ));
                None
            } else {
                Some((i64::from(*n), false))
            }
        }
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or("");
            match digits.parse::<i64>() {
                Ok(n) if digits.bytes().all(|c| c.is_ascii_digit()) => Some((n, true)),
                _ => {
                    errs.push(FieldError::invalid(path, s, PERCENT_MSG));
                    None
                }
            }
        }
    }
}

fn render_int_or_string(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// maxUnavailable and maxSurge of a rolling update at `path`.
fn validate_rolling_update(
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let unavailable_path = format!("{path}.maxUnavailable");
    let unavailable =
        max_unavailable.and_then(|v| validate_int_or_percent(v, &unavailable_path, errs));
    let surge =
        max_surge.and_then(|v| validate_int_or_percent(v, &format!("{path}.maxSurge"), errs));
    if let Some((n, true)) = unavailable {
        if n > 100 {
            errs.push(FieldError::invalid(
                &unavailable_path,
                &format!("{n}%"),
                "must not be greater than 100%",
            ));
        }
    }
    if let (Some((0, _)), Some((0, _))) = (unavailable, surge) {
        let rendered = max_unavailable
            .map(render_int_or_string)
            .unwrap_or_default();
        errs.push(FieldError {
            field: unavailable_path,
            kind: super::FieldErrorKind::Invalid(rendered),
            detail: "may not be 0 when `maxSurge` is 0".into(),
        });
    }
}

/// Update rules of a workload with a required selector: the metadata's, and the selector
/// never changes. `selector` reads it from the object (None without a spec).
fn validate_selector_update<T: Metadata<Ty = ObjectMeta>>(
    new: &T,
    old: &T,
    selector: impl Fn(&T) -> Option<&LabelSelector>,
) -> Vec<FieldError> {
    let mut errs = validate_meta_update(new.metadata(), old.metadata());
    if let (Some(new), Some(old)) = (selector(new), selector(old)) {
        if new != old {
            errs.push(FieldError::immutable("spec.selector", new));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------
// ReplicaSet
// ---------------------------------------------------------------------------------------

impl Admit for ReplicaSet {
    fn default_fields(&mut self) {
        if let Some(spec) = &mut self.spec {
            spec.replicas.get_or_insert(1);
            if let Some(t) = &mut spec.template {
                default_template(t);
            }
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            errs.push(FieldError::required("spec", ""));
            return errs;
        };
        non_negative(spec.replicas, "spec.replicas", &mut errs);
        non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        match &spec.template {
            None => errs.push(FieldError::required("spec.template", "")),
            Some(template) => {
                validate_long_running_template(&spec.selector, template, "replicaset", &mut errs);
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_selector_update(self, old, |w| w.spec.as_ref().map(|s| &s.selector))
    }
}

// ---------------------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------------------

impl Admit for Deployment {
    fn default_fields(&mut self) {
        let Some(spec) = &mut self.spec else {
            return;
        };
        spec.replicas.get_or_insert(1);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        if default_to_rolling_update(&mut strategy.type_) {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        default_template(&mut spec.template);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            errs.push(FieldError::required("spec", ""));
            return errs;
        };
        non_negative(spec.replicas, "spec.replicas", &mut errs);
        non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        non_negative(
            spec.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        if let Some(deadline) = spec.progress_deadline_seconds {
            if deadline < 0 {
                errs.push(FieldError::invalid_number(
                    "spec.progressDeadlineSeconds",
                    i64::from(deadline),
                    NON_NEGATIVE,
                ));
            } else if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                errs.push(FieldError::invalid_number(
                    "spec.progressDeadlineSeconds",
                    i64::from(deadline),
                    "must be greater than minReadySeconds",
                ));
            }
        }
        validate_long_running_template(&spec.selector, &spec.template, "deployment", &mut errs);
        if let Some(strategy) = &spec.strategy {
            match strategy.type_.as_deref() {
                Some("Recreate") => {
                    if strategy.rolling_update.is_some() {
                        errs.push(FieldError::forbidden(
                            "spec.strategy.rollingUpdate",
                            "may not be specified when strategy `type` is 'Recreate'",
                        ));
                    }
                }
                None | Some("RollingUpdate") => {}
                Some(other) => errs.push(FieldError::not_supported(
                    "spec.strategy.type",
                    other,
                    &["Recreate", "RollingUpdate"],
                )),
            }
            if let Some(ru) = strategy
                .rolling_update
                .as_ref()
                .filter(|_| strategy.type_.as_deref() != Some("Recreate"))
            {
                validate_rolling_update(
                    ru.max_unavailable.as_ref(),
                    ru.max_surge.as_ref(),
                    "spec.strategy.rollingUpdate",
                    &mut errs,
                );
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_selector_update(self, old, |w| w.spec.as_ref().map(|s| &s.selector))
    }
}

// ---------------------------------------------------------------------------------------
// DaemonSet
// ---------------------------------------------------------------------------------------

impl Admit for DaemonSet {
    fn default_fields(&mut self) {
        let Some(spec) = &mut self.spec else {
            return;
        };
        let strategy = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        if default_to_rolling_update(&mut strategy.type_) {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            ru.max_unavailable.get_or_insert(IntOrString::Int(1));
            ru.max_surge.get_or_insert(IntOrString::Int(0));
        }
        spec.revision_history_limit.get_or_insert(10);
        default_template(&mut spec.template);
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            errs.push(FieldError::required("spec", ""));
            return errs;
        };
        non_negative(spec.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        non_negative(
            spec.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        validate_long_running_template(&spec.selector, &spec.template, "daemonset", &mut errs);
        if let Some(strategy) = &spec.update_strategy {
            match strategy.type_.as_deref() {
                None | Some("RollingUpdate") => {
                    if let Some(ru) = &strategy.rolling_update {
                        validate_rolling_update(
                            ru.max_unavailable.as_ref(),
                            ru.max_surge.as_ref(),
                            "spec.updateStrategy.rollingUpdate",
                            &mut errs,
                        );
                    }
                }
                Some("OnDelete") => {}
                Some(other) => errs.push(FieldError::not_supported(
                    "spec.updateStrategy.type",
                    other,
                    &["OnDelete", "RollingUpdate"],
                )),
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_selector_update(self, old, |w| w.spec.as_ref().map(|s| &s.selector))
    }
}

// ---------------------------------------------------------------------------------------
// Job
// ---------------------------------------------------------------------------------------

/// Job's `completionMode` values.
const COMPLETION_MODES: [&str; 2] = ["NonIndexed", "Indexed"];

impl Admit for Job {
    fn default_fields(&mut self) {
        let Some(spec) = &mut self.spec else {
            return;
        };
        if spec.completions.is_none() && spec.parallelism.is_none() {
            spec.completions = Some(1);
        }
        spec.parallelism.get_or_insert(1);
        if spec.backoff_limit.is_none() {
            spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
                i32::MAX
            } else {
                6
            });
        }
        if spec.completion_mode.as_deref().is_none_or(str::is_empty) {
            spec.completion_mode = Some("NonIndexed".into());
        }
        spec.suspend.get_or_insert(false);
        if spec.pod_replacement_policy.is_none() {
            let policy = if spec.pod_failure_policy.is_some() {
                "Failed"
            } else {
                "TerminatingOrFailed"
            };
            spec.pod_replacement_policy = Some(policy.into());
        }
        default_template(&mut spec.template);
    }

    /// The selector may be absent: the API server generates it (from the Job's uid) before
    /// storing, as Kubernetes does unless `manualSelector` is set.
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            errs.push(FieldError::required("spec", ""));
            return errs;
        };
        non_negative(spec.parallelism, "spec.parallelism", &mut errs);
        non_negative(spec.completions, "spec.completions", &mut errs);
        non_negative(spec.backoff_limit, "spec.backoffLimit", &mut errs);
        non_negative(
            spec.active_deadline_seconds,
            "spec.activeDeadlineSeconds",
            &mut errs,
        );
        non_negative(
            spec.ttl_seconds_after_finished,
            "spec.ttlSecondsAfterFinished",
            &mut errs,
        );
        match spec.completion_mode.as_deref() {
            None | Some("NonIndexed") => {}
            Some("Indexed") => {
                if spec.completions.is_none() {
                    errs.push(FieldError::required(
                        "spec.completions",
                        "when completion mode is Indexed",
                    ));
                }
            }
            Some(other) => errs.push(FieldError::not_supported(
                "spec.completionMode",
                other,
                &COMPLETION_MODES,
            )),
        }
        validate_workload_template(
            spec.selector.as_ref(),
            &spec.template,
            "job",
            &["OnFailure", "Never"],
            &mut errs,
        );
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = validate_meta_update(&self.metadata, &old.metadata);
        let (Some(new), Some(old)) = (&self.spec, &old.spec) else {
            return errs;
        };
        if new.selector != old.selector {
            errs.push(FieldError::immutable("spec.selector", &new.selector));
        }
        if new.template != old.template {
            errs.push(FieldError::immutable("spec.template", &new.template));
        }
        if new.completions != old.completions {
            errs.push(FieldError::immutable("spec.completions", &new.completions));
        }
        if new.completion_mode != old.completion_mode {
            errs.push(FieldError::immutable(
                "spec.completionMode",
                &new.completion_mode,
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::pod::tests::{container, spec};
    use crate::admission::testing::fields;
    use crate::admission::FieldErrorKind;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec, ReplicaSetSpec};
    use k8s_openapi::api::batch::v1::JobSpec;

    fn labels() -> BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    fn selector() -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels()),
            match_expressions: None,
        }
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels()),
                ..Default::default()
            }),
            spec: Some(spec(vec![container("web", "nginx:1")])),
        }
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        }
    }

    fn deployment() -> Deployment {
        Deployment {
            metadata: meta(),
            spec: Some(DeploymentSpec {
                selector: selector(),
                template: template(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_deployment_is_valid_and_defaulted_like_kubernetes() {
        let mut d = deployment();
        d.default_fields();
        assert_eq!(d.validate(), vec![]);
        let s = d.spec.as_ref().unwrap();
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.revision_history_limit, Some(10));
        assert_eq!(s.progress_deadline_seconds, Some(600));
        let strategy = s.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let ru = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
        let pod = s.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        let once = d.clone();
        d.default_fields();
        assert_eq!(d, once);
    }

    #[test]
    fn a_deployment_whose_selector_misses_its_template_is_refused() {
        let mut d = deployment();
        d.spec.as_mut().unwrap().selector.match_labels =
            Some([("app".to_string(), "db".to_string())].into());
        let errs = d.validate();
        assert_eq!(fields(&errs), ["spec.template.metadata.labels"]);
        assert_eq!(
            errs[0].to_string(),
            r#"spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match template `labels`"#
        );
    }

    #[test]
    fn an_empty_selector_is_refused() {
        let mut d = deployment();
        d.spec.as_mut().unwrap().selector = LabelSelector::default();
        let errs = d.validate();
        assert_eq!(fields(&errs), ["spec.selector"]);
        assert!(errs[0]
            .detail
            .contains("empty selector is invalid for deployment"));
    }

    #[test]
    fn deployment_strategy_and_counts_are_checked() {
        let mut d = deployment();
        let s = d.spec.as_mut().unwrap();
        s.replicas = Some(-1);
        s.min_ready_seconds = Some(10);
        s.progress_deadline_seconds = Some(5);
        s.template.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        s.strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("0%".into())),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        });
        let errs = d.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.replicas",
                "spec.progressDeadlineSeconds",
                "spec.template.spec.restartPolicy",
                "spec.strategy.rollingUpdate.maxUnavailable",
            ]
        );
        assert_eq!(
            errs[3].to_string(),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
        );
    }

    #[test]
    fn recreate_deployments_may_not_carry_a_rolling_update_and_percentages_must_parse() {
        let mut d = deployment();
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: Some(RollingUpdateDeployment::default()),
        });
        assert_eq!(fields(&d.validate()), ["spec.strategy.rollingUpdate"]);
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Blue".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::String("x%".into())),
                max_unavailable: Some(IntOrString::String("150%".into())),
            }),
        });
        assert_eq!(
            fields(&d.validate()),
            [
                "spec.strategy.type",
                "spec.strategy.rollingUpdate.maxSurge",
                "spec.strategy.rollingUpdate.maxUnavailable",
            ]
        );
    }

    #[test]
    fn deployment_selector_is_immutable() {
        let old = deployment();
        let mut new = old.clone();
        new.spec.as_mut().unwrap().selector.match_labels = Some(
            [
                ("app".to_string(), "web".to_string()),
                ("v".to_string(), "2".to_string()),
            ]
            .into(),
        );
        let errs = new.validate_update(&old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::Immutable);
        assert!(errs[0].to_string().ends_with("field is immutable"));
        assert_eq!(old.validate_update(&old), vec![]);
    }

    fn replica_set() -> ReplicaSet {
        ReplicaSet {
            metadata: meta(),
            spec: Some(ReplicaSetSpec {
                selector: selector(),
                template: Some(template()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_replica_set_is_valid_and_defaults_to_one_replica() {
        let mut rs = replica_set();
        rs.default_fields();
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(rs.validate(), vec![]);
        let once = rs.clone();
        rs.default_fields();
        assert_eq!(rs, once);
    }

    #[test]
    fn a_replica_set_without_template_or_with_on_failure_is_refused() {
        let mut rs = replica_set();
        rs.spec.as_mut().unwrap().template = None;
        assert_eq!(fields(&rs.validate()), ["spec.template"]);
        let mut rs = replica_set();
        rs.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .restart_policy = Some("OnFailure".into());
        let errs = rs.validate();
        assert_eq!(
            errs[0].to_string(),
            r#"spec.template.spec.restartPolicy: Unsupported value: "OnFailure": supported values: "Always""#
        );
    }

    #[test]
    fn a_replica_set_template_is_validated_with_its_full_path() {
        let mut rs = replica_set();
        rs.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = None;
        assert_eq!(
            fields(&rs.validate()),
            ["spec.template.spec.containers[0].image"]
        );
    }

    fn daemon_set() -> DaemonSet {
        DaemonSet {
            metadata: meta(),
            spec: Some(DaemonSetSpec {
                selector: selector(),
                template: template(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_daemon_set_is_valid_and_defaulted_like_kubernetes() {
        let mut ds = daemon_set();
        ds.default_fields();
        assert_eq!(ds.validate(), vec![]);
        let s = ds.spec.as_ref().unwrap();
        assert_eq!(s.revision_history_limit, Some(10));
        let st = s.update_strategy.as_ref().unwrap();
        assert_eq!(st.type_.as_deref(), Some("RollingUpdate"));
        let ru = st.rolling_update.as_ref().unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(ru.max_surge, Some(IntOrString::Int(0)));
        let once = ds.clone();
        ds.default_fields();
        assert_eq!(ds, once);
    }

    #[test]
    fn a_daemon_set_with_unknown_strategy_or_changed_selector_is_refused() {
        let mut ds = daemon_set();
        ds.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("Sometimes".into()),
            rolling_update: None,
        });
        assert_eq!(fields(&ds.validate()), ["spec.updateStrategy.type"]);
        let old = daemon_set();
        let mut new = old.clone();
        new.spec.as_mut().unwrap().selector.match_labels = None;
        new.spec.as_mut().unwrap().selector.match_expressions = Some(vec![]);
        assert_eq!(fields(&new.validate_update(&old)), ["spec.selector"]);
    }

    fn job() -> Job {
        let mut t = template();
        t.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        Job {
            metadata: meta(),
            spec: Some(JobSpec {
                template: t,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_job_is_valid_and_defaulted_like_kubernetes() {
        let mut j = job();
        j.default_fields();
        assert_eq!(j.validate(), vec![]);
        let s = j.spec.as_ref().unwrap();
        assert_eq!(s.completions, Some(1));
        assert_eq!(s.parallelism, Some(1));
        assert_eq!(s.backoff_limit, Some(6));
        assert_eq!(s.completion_mode.as_deref(), Some("NonIndexed"));
        assert_eq!(s.suspend, Some(false));
        let once = j.clone();
        j.default_fields();
        assert_eq!(j, once);
    }

    #[test]
    fn a_job_with_only_parallelism_keeps_completions_unset() {
        let mut j = job();
        j.spec.as_mut().unwrap().parallelism = Some(3);
        j.default_fields();
        assert_eq!(j.spec.as_ref().unwrap().completions, None);
        assert_eq!(j.spec.as_ref().unwrap().parallelism, Some(3));
    }

    #[test]
    fn a_job_that_restarts_always_is_refused() {
        let mut j = job();
        j.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .restart_policy = None;
        assert_eq!(
            j.validate()[0].to_string(),
            r#"spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#
        );
        j.default_fields();
        assert_eq!(
            j.validate()[0].to_string(),
            r#"spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#
        );
    }

    #[test]
    fn job_counts_must_be_non_negative() {
        let mut j = job();
        let s = j.spec.as_mut().unwrap();
        s.parallelism = Some(-1);
        s.completions = Some(-2);
        s.backoff_limit = Some(-3);
        s.completion_mode = Some("Random".into());
        assert_eq!(
            fields(&j.validate()),
            [
                "spec.parallelism",
                "spec.completions",
                "spec.backoffLimit",
                "spec.completionMode"
            ]
        );
    }

    #[test]
    fn job_template_and_completions_are_immutable() {
        let mut old = job();
        old.default_fields();
        let mut new = old.clone();
        new.spec.as_mut().unwrap().parallelism = Some(5);
        assert_eq!(new.validate_update(&old), vec![]);
        new.spec.as_mut().unwrap().completions = Some(9);
        new.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx:2".into());
        assert_eq!(
            fields(&new.validate_update(&old)),
            ["spec.template", "spec.completions"]
        );
    }

    #[test]
    fn a_job_selector_must_match_its_template_when_given() {
        let mut j = job();
        j.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_labels: Some([("app".to_string(), "other".to_string())].into()),
            match_expressions: None,
        });
        assert_eq!(fields(&j.validate()), ["spec.template.metadata.labels"]);
    }
}
