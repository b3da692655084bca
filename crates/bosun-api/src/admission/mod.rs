//! Defaulting and validation of Kubernetes objects, as kube-apiserver does it.
//!
//! Every kind bosun serves implements [`Admit`]: the API server calls
//! [`Admit::default_fields`] on what a client sent, then [`Admit::validate`] (and, for an
//! update, [`Admit::validate_update`] against the stored object), and writes nothing when
//! any [`FieldError`] comes back. Errors name the offending field by its full path and are
//! worded like Kubernetes' own, so users see the messages they know from kubectl.
//!
//! The syntax checks that other components need (DNS-1123 names, label keys and values,
//! quantities) are public here too: [`dns1123_label`], [`label_key`], [`parse_quantity`]…
//!
//! What the API server does itself, and this module does not: resolving `generateName`,
//! checking that a namespaced object has a namespace, uid/resourceVersion/creationTimestamp,
//! generating a Job's selector, allocating ClusterIPs and NodePorts.

use std::fmt;

mod meta;
mod misc;
mod names;
mod pod;
mod quantity;
mod rbac;
mod service;
#[cfg(test)]
mod testing;
mod workloads;

pub use meta::{validate_label_selector, validate_labels, validate_object_meta};
pub use names::{
    config_key, dns1123_label, dns1123_subdomain, env_var_name, ip_address, label_key, label_value,
    path_segment_name, port_name,
};
pub use pod::{validate_binding, validate_pod_binding, validate_pod_spec};
pub use quantity::parse_quantity;
pub use service::NODE_PORT_RANGE;

/// One problem with one field, as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Full path of the field, e.g. `spec.containers[0].name`.
    pub field: String,
    /// What is wrong, with the offending value where Kubernetes shows one.
    pub kind: FieldErrorKind,
    /// Human explanation (may be empty), e.g. the expected syntax.
    pub detail: String,
}

/// The kinds of [`FieldError`], after Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// The value (rendered, strings quoted) is malformed or out of range.
    Invalid(String),
    /// The value (rendered) is not one of the supported values; `detail` lists them.
    NotSupported(String),
    /// The field may not be set, or not to this, in this context.
    Forbidden,
    /// The value is longer than allowed; `detail` says the limit.
    TooLong,
    /// The value (rendered) appears more than once where it must be unique.
    Duplicate(String),
    /// The field may not change on update; `detail` holds the new value, rendered
    /// (Kubernetes reports this as `Invalid value: <new>: field is immutable`).
    Immutable,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        let detail = |f: &mut fmt::Formatter<'_>| {
            if self.detail.is_empty() {
                Ok(())
            } else {
                write!(f, ": {}", self.detail)
            }
        };
        match &self.kind {
            FieldErrorKind::Required => {
                f.write_str("Required value")?;
                detail(f)
            }
            FieldErrorKind::Invalid(value) => {
                write!(f, "Invalid value: {value}")?;
                detail(f)
            }
            FieldErrorKind::NotSupported(value) => {
                write!(f, "Unsupported value: {value}")?;
                detail(f)
            }
            FieldErrorKind::Forbidden => {
                f.write_str("Forbidden")?;
                detail(f)
            }
            FieldErrorKind::TooLong => {
                f.write_str("Too long")?;
                detail(f)
            }
            FieldErrorKind::Duplicate(value) => {
                write!(f, "Duplicate value: {value}")?;
                detail(f)
            }
            FieldErrorKind::Immutable => {
                if self.detail.is_empty() {
                    f.write_str("Invalid value: field is immutable")
                } else {
                    write!(f, "Invalid value: {}: field is immutable", self.detail)
                }
            }
        }
    }
}

impl std::error::Error for FieldError {}

impl FieldError {
    /// A `Required value` error.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    /// An `Invalid value` error for a string value (rendered quoted).
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(quote(value)),
            detail: detail.into(),
        }
    }

    /// An `Invalid value` error for a number (rendered bare).
    pub fn invalid_number(field: impl Into<String>, value: i64, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.to_string()),
            detail: detail.into(),
        }
    }

    /// An `Invalid value` error for any value, rendered as compact JSON.
    pub fn invalid_json<T: serde::Serialize + ?Sized>(
        field: impl Into<String>,
        value: &T,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(render_json(value)),
            detail: detail.into(),
        }
    }

    /// An `Unsupported value` error listing the values that are supported.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported(quote(value)),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// A `Forbidden` error.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    /// A `Too long` error for a value longer than `max` bytes.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            detail: format!("must have at most {max} bytes"),
        }
    }

    /// A `Duplicate value` error for a string value (rendered quoted).
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate(quote(value)),
            detail: String::new(),
        }
    }

    /// A `field is immutable` error; `new_value` is rendered as compact JSON.
    pub fn immutable<T: serde::Serialize + ?Sized>(
        field: impl Into<String>,
        new_value: &T,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Immutable,
            detail: render_json(new_value),
        }
    }
}

/// Defaulting and validation of one kind.
pub trait Admit {
    /// Fills defaulted fields the way Kubernetes does (only fields Kubernetes defaults).
    fn default_fields(&mut self) {}
    /// Every problem of the object (metadata included: name, namespace-less check is the
    /// caller's, labels, annotations). Empty when valid.
    fn validate(&self) -> Vec<FieldError>;
    /// Problems of an update from `old` to `self` beyond `validate` (immutable fields).
    fn validate_update(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Renders a string the way Go's `%q` does for the common cases.
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// Longest rendering of a value kept in an error message.
const MAX_RENDERED: usize = 512;

/// Renders any value as compact JSON, shortened when very long.
pub(crate) fn render_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| String::from("<unrenderable>"));
    if s.len() > MAX_RENDERED {
        let mut cut = MAX_RENDERED;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Kubernetes' message for a count or duration below zero.
pub(crate) const NON_NEGATIVE: &str = "must be greater than or equal to 0";

/// Reports `value` at `path` when it is set and below zero.
pub(crate) fn non_negative<T: Into<i64>>(value: Option<T>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = value.map(Into::into).filter(|v| *v < 0) {
        errs.push(FieldError::invalid_number(path, v, NON_NEGATIVE));
    }
}

/// Errors for a metadata update: name and namespace never change.
pub(crate) fn validate_meta_update(
    new: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.name != old.name {
        errs.push(FieldError::immutable(
            "metadata.name",
            new.name.as_deref().unwrap_or(""),
        ));
    }
    if new.namespace != old.namespace {
        errs.push(FieldError::immutable(
            "metadata.namespace",
            new.namespace.as_deref().unwrap_or(""),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_error_displays_like_kubernetes() {
        let e = FieldError::required("spec.containers[0].name", "");
        assert_eq!(e.to_string(), "spec.containers[0].name: Required value");
    }

    #[test]
    fn invalid_error_quotes_the_value_and_appends_the_detail() {
        let e = FieldError::invalid("metadata.name", "Foo_Bar", "bad");
        assert_eq!(
            e.to_string(),
            r#"metadata.name: Invalid value: "Foo_Bar": bad"#
        );
        let n =
            FieldError::invalid_number("spec.replicas", -1, "must be greater than or equal to 0");
        assert_eq!(
            n.to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn unsupported_error_lists_supported_values_in_order() {
        let e = FieldError::not_supported(
            "spec.restartPolicy",
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        );
        assert_eq!(
            e.to_string(),
            r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#
        );
    }

    #[test]
    fn immutable_error_shows_the_new_value_then_says_immutable() {
        let e = FieldError::immutable("spec.clusterIP", "10.0.0.2");
        assert_eq!(
            e.to_string(),
            r#"spec.clusterIP: Invalid value: "10.0.0.2": field is immutable"#
        );
    }

    #[test]
    fn forbidden_too_long_and_duplicate_errors_display_their_type() {
        assert_eq!(
            FieldError::forbidden("spec", "no").to_string(),
            "spec: Forbidden: no"
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).to_string(),
            "metadata.annotations: Too long: must have at most 262144 bytes"
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1].name", "http").to_string(),
            r#"spec.ports[1].name: Duplicate value: "http""#
        );
    }

    #[test]
    fn long_json_renderings_are_shortened_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let r = render_json(&long);
        assert!(r.len() <= MAX_RENDERED + 3);
        assert!(r.ends_with("..."));
    }

    #[test]
    fn renaming_an_object_is_refused() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let old = ObjectMeta {
            name: Some("a".into()),
            ..Default::default()
        };
        let new = ObjectMeta {
            name: Some("b".into()),
            ..Default::default()
        };
        let errs = validate_meta_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert!(validate_meta_update(&old, &old).is_empty());
    }
}
