//! Syntax of names, label keys and values, config keys, port names and addresses.
//!
//! Each check has a private form returning every problem (one message each, worded like
//! Kubernetes' `validation.Is*` functions) and a public form joining them.

use std::net::IpAddr;

/// Longest DNS-1123 label.
pub(crate) const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain.
pub(crate) const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest name part of a qualified name, and longest label value.
const QUALIFIED_NAME_MAX: usize = 63;
/// Longest config key.
const CONFIG_KEY_MAX: usize = 253;
/// Longest IANA service (port) name.
const PORT_NAME_MAX: usize = 15;

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// Kubernetes' `RegexError` wording: the rule, examples, then the regex.
fn regex_error(msg: &str, regex: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
    format!(
        "{msg} (e.g. {}, regex used for validation is '{regex}')",
        examples.join(",  or ")
    )
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const ENV_VAR_NAME_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_label_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => end(f) && end(l) && b.iter().all(inner),
        _ => false,
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() && b.iter().all(inner)
        }
        _ => false,
    }
}

pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !is_label_syntax(s) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_label_syntax) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "{} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    &format!("a qualified name {QUALIFIED_NAME_MSG}"),
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"],
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !is_qualified_syntax(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            )
        ));
    }
    errs
}

pub(crate) fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > QUALIFIED_NAME_MAX {
        errs.push(max_len_error(QUALIFIED_NAME_MAX));
    }
    if !s.is_empty() && !is_qualified_syntax(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

pub(crate) fn config_key_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > CONFIG_KEY_MAX {
        errs.push(max_len_error(CONFIG_KEY_MAX));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

pub(crate) fn env_var_name_errors(s: &str) -> Vec<String> {
    if s.is_empty() || s.bytes().any(|c| !(32..=126).contains(&c) || c == b'=') {
        vec![ENV_VAR_NAME_MSG.to_string()]
    } else {
        Vec::new()
    }
}

pub(crate) fn port_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > PORT_NAME_MAX {
        errs.push(max_len_error(PORT_NAME_MAX));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

pub(crate) fn path_segment_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s == "." || s == ".." {
        errs.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

fn joined(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Checks a DNS-1123 label: at most 63 characters of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    joined(dns1123_label_errors(s))
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated labels.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    joined(dns1123_subdomain_errors(s))
}

/// Checks a label (or annotation) key: a qualified name with an optional DNS subdomain
/// prefix and `/`, the name part at most 63 characters.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn label_key(s: &str) -> Result<(), String> {
    joined(qualified_name_errors(s))
}

/// Checks a label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and
/// ending with an alphanumeric.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn label_value(s: &str) -> Result<(), String> {
    joined(label_value_errors(s))
}

/// Checks a ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn config_key(s: &str) -> Result<(), String> {
    joined(config_key_errors(s))
}

/// Checks an environment variable name: printable ASCII other than `=` (Kubernetes 1.34
/// relaxed rule), non-empty.
///
/// # Errors
/// Kubernetes' message when `s` is not one.
pub fn env_var_name(s: &str) -> Result<(), String> {
    joined(env_var_name_errors(s))
}

/// Checks a named port (IANA service name): at most 15 lowercase alphanumerics and `-`,
/// at least one letter, no `--`, not starting or ending with `-`.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn port_name(s: &str) -> Result<(), String> {
    joined(port_name_errors(s))
}

/// Checks a name used as one path segment (RBAC objects): not `.` or `..`, no `/` or `%`.
///
/// # Errors
/// Kubernetes' message(s) when `s` is not one, joined by `; `.
pub fn path_segment_name(s: &str) -> Result<(), String> {
    joined(path_segment_name_errors(s))
}

/// Parses an IPv4 or IPv6 address in its canonical text forms (no leading zeros in IPv4).
///
/// # Errors
/// Kubernetes' message when `s` is not an IP address.
pub fn ip_address(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_accepts_lowercase_alphanumerics_and_inner_hyphens() {
        for ok in ["a", "0", "my-name", "123-abc", "a--b", &"a".repeat(63)] {
            assert_eq!(dns1123_label(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn label_refuses_uppercase_edges_dots_empty_and_64_chars() {
        for bad in ["", "A", "-a", "a-", "a.b", "a_b", "ü"] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        let long = "a".repeat(64);
        assert_eq!(
            dns1123_label(&long),
            Err("must be no more than 63 characters".to_string())
        );
    }

    #[test]
    fn label_error_is_worded_like_kubernetes() {
        assert_eq!(
            dns1123_label("Foo"),
            Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
        );
    }

    #[test]
    fn subdomain_accepts_dotted_labels_up_to_253() {
        assert_eq!(dns1123_subdomain("example.com"), Ok(()));
        assert_eq!(dns1123_subdomain("a.b-c.d1"), Ok(()));
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(long.len(), 253);
        assert_eq!(dns1123_subdomain(&long), Ok(()));
        let too_long = format!("{long}e");
        assert!(dns1123_subdomain(&too_long).is_err());
    }

    #[test]
    fn subdomain_refuses_empty_labels_and_bad_characters() {
        for bad in ["", ".", "a.", ".a", "a..b", "Foo_Bar", "a.-b"] {
            let err = dns1123_subdomain(bad).unwrap_err();
            assert!(
                err.starts_with("a lowercase RFC 1123 subdomain"),
                "{bad}: {err}"
            );
        }
        assert!(dns1123_subdomain("Foo_Bar")
            .unwrap_err()
            .contains("(e.g. 'example.com', regex used"));
    }

    #[test]
    fn label_key_accepts_prefixed_and_plain_names() {
        for ok in [
            "app",
            "App.Name_1",
            "example.com/MyName",
            "kubernetes.io/os",
            &"a".repeat(63),
        ] {
            assert_eq!(label_key(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn label_key_refuses_bad_prefix_name_and_slashes() {
        assert_eq!(
            label_key("/a"),
            Err("prefix part must be non-empty".to_string())
        );
        assert!(label_key("Example.com/a")
            .unwrap_err()
            .starts_with("prefix part a lowercase RFC 1123 subdomain"));
        assert!(label_key("a/b/c")
            .unwrap_err()
            .contains("with an optional DNS subdomain prefix"));
        assert!(label_key("")
            .unwrap_err()
            .contains("name part must be non-empty"));
        assert!(label_key("a/")
            .unwrap_err()
            .contains("name part must be non-empty"));
        assert!(label_key(&"a".repeat(64))
            .unwrap_err()
            .contains("name part must be no more than 63 characters"));
        assert!(label_key("-a").is_err());
        assert!(label_key("a b").is_err());
    }

    #[test]
    fn label_value_may_be_empty_but_not_64_chars_or_badly_edged() {
        assert_eq!(label_value(""), Ok(()));
        assert_eq!(label_value("my_value"), Ok(()));
        assert_eq!(label_value("12345"), Ok(()));
        assert_eq!(label_value(&"v".repeat(63)), Ok(()));
        assert!(label_value(&"v".repeat(64)).is_err());
        assert!(label_value("_a").is_err());
        assert!(label_value("a/b")
            .unwrap_err()
            .starts_with("a valid label must be an empty string"));
    }

    #[test]
    fn config_key_refuses_dot_dotdot_and_slashes() {
        for ok in ["key.name", "KEY_NAME", "key-name", ".hidden", "a..b"] {
            assert_eq!(config_key(ok), Ok(()), "{ok}");
        }
        assert!(config_key("").is_err());
        assert!(config_key("a/b").is_err());
        assert_eq!(config_key("."), Err("must not be '.'".to_string()));
        assert_eq!(config_key(".."), Err("must not be '..'".to_string()));
        assert_eq!(
            config_key("..a"),
            Err("must not start with '..'".to_string())
        );
        assert!(config_key(&"k".repeat(254)).is_err());
        assert_eq!(config_key(&"k".repeat(253)), Ok(()));
    }

    #[test]
    fn env_var_name_allows_printable_ascii_except_equals() {
        assert_eq!(env_var_name("MY_VAR"), Ok(()));
        assert_eq!(env_var_name("1.weird-name"), Ok(()));
        assert!(env_var_name("").is_err());
        assert!(env_var_name("A=B").is_err());
        assert!(env_var_name("tab\t").is_err());
        assert!(env_var_name("é").is_err());
    }

    #[test]
    fn port_name_follows_iana_rules() {
        assert_eq!(port_name("http"), Ok(()));
        assert_eq!(port_name("h2-c"), Ok(()));
        assert_eq!(port_name("a23456789012345"), Ok(()));
        assert!(port_name("a234567890123456").is_err());
        assert_eq!(
            port_name("123"),
            Err("must contain at least one letter (a-z)".to_string())
        );
        assert_eq!(
            port_name("a--b"),
            Err("must not contain consecutive hyphens".to_string())
        );
        assert_eq!(
            port_name("-ab"),
            Err("must not begin or end with a hyphen".to_string())
        );
        assert!(port_name("HTTP").is_err());
        assert!(port_name("").is_err());
    }

    #[test]
    fn path_segment_name_refuses_dots_slashes_and_percent() {
        assert_eq!(path_segment_name("system:admin"), Ok(()));
        assert!(path_segment_name(".").is_err());
        assert!(path_segment_name("..").is_err());
        assert!(path_segment_name("a/b").is_err());
        assert!(path_segment_name("a%b").is_err());
    }

    #[test]
    fn ip_address_accepts_v4_and_v6_and_refuses_leading_zeros() {
        assert!(ip_address("10.9.8.7").is_ok());
        assert!(ip_address("2001:db8::ffff").is_ok());
        assert!(ip_address("010.9.8.7").is_err());
        assert!(ip_address("10.9.8").is_err());
        assert!(ip_address("").is_err());
    }
}
