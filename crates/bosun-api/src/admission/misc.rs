//! core/v1 Namespace, Node, ConfigMap, Secret, Event and coordination/v1 Lease.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Secret};
use k8s_openapi::ByteString;

use super::names::{config_key_errors, label_value_errors, qualified_name_errors};
use super::pod::TAINT_EFFECTS;
use super::{
    dns1123_label, dns1123_subdomain, non_negative, validate_meta_update, validate_object_meta,
    Admit, FieldError,
};

/// Largest total size of a ConfigMap's or Secret's data, as Kubernetes (1 MiB).
pub(crate) const DATA_MAX_BYTES: usize = 1024 * 1024;
const IMMUTABLE_DATA: &str = "field is immutable when `immutable` is set";

// ---------------------------------------------------------------------------------------
// Namespace
// ---------------------------------------------------------------------------------------

impl Admit for Namespace {
    fn validate(&self) -> Vec<FieldError> {
        validate_object_meta(&self.metadata, "metadata", dns1123_label)
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

// ---------------------------------------------------------------------------------------
// Node
// ---------------------------------------------------------------------------------------

/// Parses `a.b.c.d/n` or `v6::/n`.
fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    !len.is_empty()
        && len.bytes().all(|c| c.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|n| n <= max)
}

impl Admit for Node {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            return errs;
        };
        if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
            if !is_cidr(cidr) {
                errs.push(FieldError::invalid(
                    "spec.podCIDR",
                    cidr,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
        for (i, cidr) in spec.pod_cidrs.iter().flatten().enumerate() {
            if !is_cidr(cidr) {
                errs.push(FieldError::invalid(
                    format!("spec.podCIDRs[{i}]"),
                    cidr,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, taint) in spec.taints.iter().flatten().enumerate() {
            let p = format!("spec.taints[{i}]");
            if taint.key.is_empty() {
                errs.push(FieldError::required(format!("{p}.key"), ""));
            }
            for msg in qualified_name_errors(&taint.key) {
                if !taint.key.is_empty() {
                    errs.push(FieldError::invalid(format!("{p}.key"), &taint.key, msg));
                }
            }
            if let Some(value) = &taint.value {
                for msg in label_value_errors(value) {
                    errs.push(FieldError::invalid(format!("{p}.value"), value, msg));
                }
            }
            if taint.effect.is_empty() {
                errs.push(FieldError::required(format!("{p}.effect"), ""));
            } else if !TAINT_EFFECTS.contains(&taint.effect.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{p}.effect"),
                    &taint.effect,
                    &TAINT_EFFECTS,
                ));
            }
            if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
                errs.push(FieldError {
                    field: p,
                    kind: super::FieldErrorKind::Duplicate(super::render_json(taint)),
                    detail: "taints must be unique by key and effect pair".into(),
                });
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = validate_meta_update(&self.metadata, &old.metadata);
        let old_cidr = old
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .unwrap_or("");
        let new_cidr = self
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .unwrap_or("");
        if !old_cidr.is_empty() && old_cidr != new_cidr {
            errs.push(FieldError::forbidden(
                "spec.podCIDR",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        errs
    }
}

// ---------------------------------------------------------------------------------------
// ConfigMap and Secret
// ---------------------------------------------------------------------------------------

fn validate_keys<'a>(
    keys: impl Iterator<Item = &'a String>,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    for key in keys {
        for msg in config_key_errors(key) {
            errs.push(FieldError::invalid(format!("{field}[{key}]"), key, msg));
        }
    }
}

/// The values of a ConfigMap or Secret, text and binary, fit in [`DATA_MAX_BYTES`].
fn validate_data_size(
    strings: Option<&BTreeMap<String, String>>,
    bytes: Option<&BTreeMap<String, ByteString>>,
    errs: &mut Vec<FieldError>,
) {
    let total: usize = strings
        .into_iter()
        .flatten()
        .map(|(_, v)| v.len())
        .sum::<usize>()
        + bytes
            .into_iter()
            .flatten()
            .map(|(_, v)| v.0.len())
            .sum::<usize>();
    if total > DATA_MAX_BYTES {
        errs.push(FieldError::too_long("data", DATA_MAX_BYTES));
    }
}

/// Once a ConfigMap or Secret is `immutable`, it stays so and none of its data fields
/// (`changed`: each field's name and whether the update changes it) may change.
fn validate_immutable_data(
    new_immutable: Option<bool>,
    old_immutable: Option<bool>,
    changed: &[(&str, bool)],
    errs: &mut Vec<FieldError>,
) {
    if old_immutable != Some(true) {
        return;
    }
    if new_immutable != Some(true) {
        errs.push(FieldError::forbidden("immutable", IMMUTABLE_DATA));
    }
    for (field, _) in changed.iter().filter(|(_, changed)| *changed) {
        errs.push(FieldError::forbidden(*field, IMMUTABLE_DATA));
    }
}

impl Admit for ConfigMap {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let data = self.data.as_ref();
        let binary = self.binary_data.as_ref();
        validate_keys(data.into_iter().flat_map(BTreeMap::keys), "data", &mut errs);
        validate_keys(
            binary.into_iter().flat_map(BTreeMap::keys),
            "binaryData",
            &mut errs,
        );
        if let (Some(data), Some(binary)) = (data, binary) {
            for key in binary.keys().filter(|k| data.contains_key(*k)) {
                errs.push(FieldError {
                    field: format!("binaryData[{key}]"),
                    kind: super::FieldErrorKind::Duplicate(super::quote(key)),
                    detail: "duplicate of key present in data".into(),
                });
            }
        }
        validate_data_size(data, binary, &mut errs);
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = validate_meta_update(&self.metadata, &old.metadata);
        validate_immutable_data(
            self.immutable,
            old.immutable,
            &[
                ("data", self.data != old.data),
                ("binaryData", self.binary_data != old.binary_data),
            ],
            &mut errs,
        );
        errs
    }
}

/// Keys a Secret of a known type must hold.
fn required_secret_keys(secret_type: &str) -> &'static [&'static str] {
    match secret_type {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    }
}

impl Admit for Secret {
    /// Defaults `type` to Opaque, and folds the write-only `stringData` into `data` (what
    /// Kubernetes does when it decodes a Secret), so `stringData` is never stored.
    fn default_fields(&mut self) {
        if self.type_.as_deref().is_none_or(str::is_empty) {
            self.type_ = Some("Opaque".into());
        }
        if let Some(strings) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in strings {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let empty = BTreeMap::new();
        let data = self.data.as_ref().unwrap_or(&empty);
        let strings = self.string_data.as_ref();
        validate_keys(data.keys(), "data", &mut errs);
        validate_keys(
            strings.into_iter().flat_map(BTreeMap::keys),
            "stringData",
            &mut errs,
        );
        let has =
            |key: &str| data.contains_key(key) || strings.is_some_and(|s| s.contains_key(key));
        let value = |key: &str| -> Option<Vec<u8>> {
            strings
                .and_then(|s| s.get(key).map(|v| v.clone().into_bytes()))
                .or_else(|| data.get(key).map(|v| v.0.clone()))
        };
        let secret_type = self.type_.as_deref().unwrap_or("Opaque");
        for key in required_secret_keys(secret_type) {
            if !has(key) {
                errs.push(FieldError::required(format!("data[{key}]"), ""));
            }
        }
        match secret_type {
            "kubernetes.io/dockerconfigjson" => {
                if let Some(v) = value(".dockerconfigjson") {
                    if serde_json::from_slice::<serde_json::Value>(&v).is_err() {
                        errs.push(FieldError::invalid(
                            "data[.dockerconfigjson]",
                            "<secret contents redacted>",
                            "must be valid JSON",
                        ));
                    }
                }
            }
            "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
                errs.push(FieldError::required(
                    "data[username]",
                    "one of `username` or `password` must be provided",
                ));
            }
            "kubernetes.io/service-account-token" => {
                let named = self
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .is_some_and(|n| !n.is_empty());
                if !named {
                    errs.push(FieldError::required(
                        "metadata.annotations[kubernetes.io/service-account.name]",
                        "",
                    ));
                }
            }
            _ => {}
        }
        validate_data_size(strings, Some(data), &mut errs);
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = validate_meta_update(&self.metadata, &old.metadata);
        let new_type = self.type_.as_deref().unwrap_or("Opaque");
        let old_type = old.type_.as_deref().unwrap_or("Opaque");
        if new_type != old_type {
            errs.push(FieldError::immutable("type", new_type));
        }
        let data_changed = self.data != old.data || self.string_data.is_some();
        validate_immutable_data(
            self.immutable,
            old.immutable,
            &[("data", data_changed)],
            &mut errs,
        );
        errs
    }
}

// ---------------------------------------------------------------------------------------
// Event and Lease
// ---------------------------------------------------------------------------------------

impl Admit for Event {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let involved = &self.involved_object;
        if involved.kind.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required("involvedObject.kind", ""));
        }
        if involved.name.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required("involvedObject.name", ""));
        }
        if let Some(t) = self.type_.as_deref().filter(|t| !t.is_empty()) {
            if t != "Normal" && t != "Warning" {
                errs.push(FieldError::not_supported("type", t, &["Normal", "Warning"]));
            }
        }
        non_negative(self.count, "count", &mut errs);
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

impl Admit for Lease {
    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        let Some(spec) = &self.spec else {
            return errs;
        };
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            errs.push(FieldError::invalid_number(
                "spec.leaseDurationSeconds",
                i64::from(d),
                "must be greater than 0",
            ));
        }
        non_negative(spec.lease_transitions, "spec.leaseTransitions", &mut errs);
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{fields, meta, strings};
    use crate::admission::FieldErrorKind;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, ObjectReference, Taint};

    fn bytes(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn namespaces_are_named_by_dns_labels() {
        let ok = Namespace {
            metadata: meta("team-a"),
            ..Default::default()
        };
        assert_eq!(ok.validate(), vec![]);
        let bad = Namespace {
            metadata: meta("team.a"),
            ..Default::default()
        };
        assert_eq!(fields(&bad.validate()), ["metadata.name"]);
    }

    #[test]
    fn node_taints_need_valid_keys_known_effects_and_uniqueness() {
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        let mut node = Node {
            metadata: meta("node-1.example"),
            spec: Some(NodeSpec {
                pod_cidr: Some("10.244.1.0/24".into()),
                taints: Some(vec![taint("dedicated", "NoSchedule")]),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(node.validate(), vec![]);
        let spec = node.spec.as_mut().unwrap();
        spec.pod_cidr = Some("10.244.1.0/33".into());
        spec.taints = Some(vec![
            taint("dedicated", "NoSchedule"),
            taint("dedicated", "NoSchedule"),
            taint("bad key", "Sometimes"),
            taint("", ""),
        ]);
        let errs = node.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.podCIDR",
                "spec.taints[1]",
                "spec.taints[2].key",
                "spec.taints[2].effect",
                "spec.taints[3].key",
                "spec.taints[3].effect",
            ]
        );
        node.default_fields();
    }

    #[test]
    fn cidrs_parse_v4_and_v6_with_bounded_prefixes() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("fd00::/64"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("10.0.0.0/"));
        assert!(!is_cidr("10.0.0.0/+8"));
        assert!(!is_cidr("fd00::/129"));
    }

    #[test]
    fn config_map_keys_must_be_config_keys_and_unique_across_data_and_binary_data() {
        let ok = ConfigMap {
            metadata: meta("settings"),
            data: Some(strings(&[("app.conf", "x"), ("KEY_2", "y")])),
            binary_data: Some(bytes(&[("blob.bin", "z")])),
            ..Default::default()
        };
        assert_eq!(ok.validate(), vec![]);
        let bad = ConfigMap {
            metadata: meta("settings"),
            data: Some(strings(&[("a/b", "x"), ("same", "y")])),
            binary_data: Some(bytes(&[("same", "z"), ("..", "")])),
            ..Default::default()
        };
        let errs = bad.validate();
        assert_eq!(
            fields(&errs),
            ["data[a/b]", "binaryData[..]", "binaryData[same]"]
        );
        assert_eq!(errs[2].kind, FieldErrorKind::Duplicate("\"same\"".into()));
    }

    #[test]
    fn config_maps_larger_than_one_mebibyte_are_refused() {
        let cm = ConfigMap {
            metadata: meta("big"),
            data: Some(strings(&[("a", &"x".repeat(DATA_MAX_BYTES)), ("b", "y")])),
            ..Default::default()
        };
        let errs = cm.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, FieldErrorKind::TooLong);
    }

    #[test]
    fn immutable_config_maps_keep_their_data_and_their_immutability() {
        let old = ConfigMap {
            metadata: meta("c"),
            data: Some(strings(&[("a", "1")])),
            immutable: Some(true),
            ..Default::default()
        };
        assert_eq!(old.validate_update(&old), vec![]);
        let mut new = old.clone();
        new.data = Some(strings(&[("a", "2")]));
        new.immutable = None;
        assert_eq!(fields(&new.validate_update(&old)), ["immutable", "data"]);
        let mut mutable = old.clone();
        mutable.immutable = Some(false);
        let mut changed = mutable.clone();
        changed.data = None;
        assert_eq!(changed.validate_update(&mutable), vec![]);
    }

    #[test]
    fn secrets_default_to_opaque_and_fold_string_data() {
        let mut s = Secret {
            metadata: meta("creds"),
            string_data: Some(strings(&[("password", "hunter2")])),
            data: Some(bytes(&[("user", "me")])),
            ..Default::default()
        };
        s.default_fields();
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.string_data, None);
        assert_eq!(s.data.as_ref().unwrap()["password"].0, b"hunter2");
        assert_eq!(s.validate(), vec![]);
        let once = s.clone();
        s.default_fields();
        assert_eq!(s, once);
    }

    #[test]
    fn typed_secrets_need_their_keys() {
        let tls = Secret {
            metadata: meta("tls"),
            type_: Some("kubernetes.io/tls".into()),
            data: Some(bytes(&[("tls.crt", "c")])),
            ..Default::default()
        };
        let errs = tls.validate();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "data[tls.key]: Required value");
        let docker = Secret {
            metadata: meta("pull"),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(bytes(&[(".dockerconfigjson", "{not json")])),
            ..Default::default()
        };
        assert_eq!(fields(&docker.validate()), ["data[.dockerconfigjson]"]);
        let missing = Secret {
            metadata: meta("pull"),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Default::default()
        };
        assert_eq!(fields(&missing.validate()), ["data[.dockerconfigjson]"]);
        let custom = Secret {
            metadata: meta("x"),
            type_: Some("example.com/anything".into()),
            ..Default::default()
        };
        assert_eq!(custom.validate(), vec![]);
    }

    #[test]
    fn secret_type_and_immutable_data_do_not_change() {
        let old = Secret {
            metadata: meta("s"),
            type_: Some("Opaque".into()),
            data: Some(bytes(&[("k", "v")])),
            immutable: Some(true),
            ..Default::default()
        };
        let mut new = old.clone();
        new.type_ = Some("kubernetes.io/tls".into());
        new.data = Some(bytes(&[("k", "w")]));
        assert_eq!(fields(&new.validate_update(&old)), ["type", "data"]);
    }

    #[test]
    fn events_need_an_involved_object_and_a_known_type() {
        let ok = Event {
            metadata: meta("web.17f0"),
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            type_: Some("Warning".into()),
            ..Default::default()
        };
        assert_eq!(ok.validate(), vec![]);
        let bad = Event {
            metadata: meta("web.17f0"),
            type_: Some("Error".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(&bad.validate()),
            ["involvedObject.kind", "involvedObject.name", "type"]
        );
    }

    #[test]
    fn leases_need_a_positive_duration() {
        let mut lease = Lease {
            metadata: meta("node-1"),
            spec: Some(LeaseSpec {
                holder_identity: Some("anything goes here".into()),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
        };
        assert_eq!(lease.validate(), vec![]);
        lease.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
        assert_eq!(fields(&lease.validate()), ["spec.leaseDurationSeconds"]);
    }
}
