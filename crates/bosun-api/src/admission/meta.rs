//! Object metadata, labels, annotations and label selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::names::{label_value_errors, qualified_name_errors};
use super::FieldError;

/// Largest total size of an object's annotations (keys plus values), as Kubernetes.
pub(crate) const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Validates an object's metadata: the name (required: the API server resolves
/// `generateName` first; then checked by `name_check`), labels and annotations. Nothing
/// else: uid, resourceVersion, timestamps and the namespace are the server's business.
/// `path` is the path of the metadata itself, normally `metadata`.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    path: &str,
    name_check: fn(&str) -> Result<(), String>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            format!("{path}.name"),
            "name or generateName is required",
        )),
        Some(name) => {
            if let Err(msg) = name_check(name) {
                for m in msg.split("; ") {
                    errs.push(FieldError::invalid(format!("{path}.name"), name, m));
                }
            }
        }
    }
    errs.extend(validate_labels_and_annotations(meta, path));
    errs
}

/// Labels and annotations only (pod templates have no name of their own).
pub(crate) fn validate_labels_and_annotations(meta: &ObjectMeta, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = &meta.labels {
        errs.extend(validate_labels(labels, &format!("{path}.labels")));
    }
    if let Some(annotations) = &meta.annotations {
        errs.extend(validate_annotations(
            annotations,
            &format!("{path}.annotations"),
        ));
    }
    errs
}

/// Validates a label map (keys are qualified names, values label values), reporting each
/// bad key or value at `path` as Kubernetes does (`metadata.labels: Invalid value: "k"…`).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in labels {
        for msg in qualified_name_errors(key) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        for msg in label_value_errors(value) {
            errs.push(FieldError::invalid(path, value, msg));
        }
    }
    errs
}

fn validate_annotations(annotations: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations {
        for msg in qualified_name_errors(&key.to_lowercase()) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        total = total.saturating_add(key.len()).saturating_add(value.len());
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.push(FieldError::too_long(path, ANNOTATIONS_MAX_BYTES));
    }
    errs
}

const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Validates a label selector: `matchLabels` as labels, each `matchExpressions` entry with
/// a valid key, a known operator, and values present for `In`/`NotIn` and absent for
/// `Exists`/`DoesNotExist`.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = &selector.match_labels {
        errs.extend(validate_labels(labels, &format!("{path}.matchLabels")));
    }
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{p}.operator"),
                other,
                &SELECTOR_OPERATORS,
            )),
        }
        for msg in qualified_name_errors(&req.key) {
            errs.push(FieldError::invalid(format!("{p}.key"), &req.key, msg));
        }
        for (j, v) in values.iter().enumerate() {
            for msg in label_value_errors(v) {
                errs.push(FieldError::invalid(format!("{p}.values[{j}]"), v, msg));
            }
        }
    }
    errs
}

/// True when the selector has neither labels nor expressions (it would match everything).
pub(crate) fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Whether `labels` satisfy `selector` (an unknown operator matches nothing).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = labels.get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{meta, strings as map};
    use crate::admission::{dns1123_subdomain, FieldErrorKind};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn well_formed_metadata_has_no_errors() {
        let mut m = meta("web-1");
        m.labels = Some(map(&[("app", "web"), ("example.com/tier", "")]));
        m.annotations = Some(map(&[(
            "kubernetes.io/change-cause",
            "anything at all: ok",
        )]));
        assert!(validate_object_meta(&m, "metadata", dns1123_subdomain).is_empty());
    }

    #[test]
    fn missing_name_is_required() {
        let errs = validate_object_meta(&ObjectMeta::default(), "metadata", dns1123_subdomain);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
    }

    #[test]
    fn bad_name_is_invalid_with_the_checker_message() {
        let errs = validate_object_meta(&meta("Foo_Bar"), "metadata", dns1123_subdomain);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with(
            r#"metadata.name: Invalid value: "Foo_Bar": a lowercase RFC 1123 subdomain"#
        ));
    }

    #[test]
    fn bad_label_keys_and_values_are_each_reported() {
        let mut m = meta("a");
        m.labels = Some(map(&[("bad key", "ok"), ("ok", "bad value")]));
        let errs = validate_object_meta(&m, "metadata", dns1123_subdomain);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.field == "metadata.labels"));
        assert_eq!(errs[0].kind, FieldErrorKind::Invalid("\"bad key\"".into()));
    }

    #[test]
    fn oversized_annotations_are_too_long() {
        let mut m = meta("a");
        m.annotations = Some(map(&[("big", &"x".repeat(ANNOTATIONS_MAX_BYTES))]));
        let errs = validate_object_meta(&m, "metadata", dns1123_subdomain);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::TooLong);
        assert_eq!(errs[0].field, "metadata.annotations");
    }

    #[test]
    fn uppercase_annotation_keys_are_accepted_like_kubernetes() {
        let mut m = meta("a");
        m.annotations = Some(map(&[("Example.COM/Key", "v")]));
        assert!(validate_object_meta(&m, "metadata", dns1123_subdomain).is_empty());
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    #[test]
    fn selector_operators_and_value_counts_are_checked() {
        let sel = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", &[]),
                req("env", "Exists", &["x"]),
                req("zone", "Near", &["a"]),
                req("ok", "NotIn", &["a", "b"]),
                req("bad key", "DoesNotExist", &[]),
            ]),
        };
        let errs = validate_label_selector(&sel, "spec.selector");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
                "spec.selector.matchExpressions[4].key",
            ]
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = map(&[("app", "web"), ("tier", "front")]);
        let sel = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![
                req("tier", "In", &["front", "back"]),
                req("env", "DoesNotExist", &[]),
                req("zone", "NotIn", &["a"]),
            ]),
        };
        assert!(selector_matches(&sel, &labels));
        let other = LabelSelector {
            match_labels: Some(map(&[("app", "db")])),
            match_expressions: None,
        };
        assert!(!selector_matches(&other, &labels));
        assert!(selector_is_empty(&LabelSelector::default()));
        assert!(!selector_is_empty(&sel));
    }
}
