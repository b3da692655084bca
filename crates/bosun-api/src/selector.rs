//! Label and field selectors, with Kubernetes' syntax and semantics.
//!
//! - [`LabelSelector`] parses `kubectl -l` syntax (`app=web,tier!=db,env in (a, b),!legacy`)
//!   and converts `metav1.LabelSelector` (`matchLabels` + `matchExpressions`); both end as a
//!   conjunction of [`Requirement`]s. An empty selector matches everything.
//! - [`FieldSelector`] parses `--field-selector` syntax (`metadata.name=x,spec.nodeName!=`) and
//!   matches objects in their JSON form, so the server can filter any kind the same way.
//!
//! Positions in error messages are byte offsets into the selector string, counted from 0.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// Longest label value and longest name part of a label key.
const MAX_NAME_LEN: usize = 63;
/// Longest DNS subdomain, the optional prefix of a label key.
const MAX_PREFIX_LEN: usize = 253;

/// What went wrong parsing or converting a selector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The label selector string is not well formed.
    #[error("label selector {input:?}: {reason} at position {position}")]
    LabelSyntax {
        /// The whole selector string.
        input: String,
        /// Byte offset of the offending token.
        position: usize,
        /// What was expected or found.
        reason: String,
    },
    /// A label key is not a qualified name (`[prefix/]name`).
    #[error("{context}: invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// Where the key was found: the selector and position, or the `metav1` field.
        context: String,
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A label value is not a valid label value.
    #[error("{context}: invalid label value {value:?}: {reason}")]
    InvalidValue {
        /// Where the value was found: the selector and position, or the `metav1` field.
        context: String,
        /// The value as given.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A `matchExpressions` entry has an unknown operator or the wrong number of values.
    #[error("label selector matchExpressions[{index}] (key {key:?}): {reason}")]
    InvalidExpression {
        /// Index of the entry in `matchExpressions`.
        index: usize,
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The field selector string is not well formed.
    #[error("field selector {input:?}: {reason} at position {position}")]
    FieldSyntax {
        /// The whole selector string.
        input: String,
        /// Byte offset of the offending term or character.
        position: usize,
        /// What was expected or found.
        reason: String,
    },
}

/// Result of selector parsing and conversion.
pub type Result<T, E = SelectorError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Label keys and values
// ---------------------------------------------------------------------------------------------

/// Checks a label key: a qualified name, `name` or `prefix/name`, where `name` is at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending with an alphanumeric character and
/// `prefix` is a lowercase DNS subdomain of at most 253 characters.
///
/// # Errors
///
/// The rule the key breaks, as a lowercase phrase.
pub fn validate_label_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("prefix part must not be empty");
            }
            if prefix.len() > MAX_PREFIX_LEN {
                return Err("prefix part must be no more than 253 characters");
            }
            if !is_dns_subdomain(prefix) {
                return Err("prefix part must be a lowercase DNS subdomain (RFC 1123)");
            }
            if name.contains('/') {
                return Err("must have at most one '/'");
            }
            name
        }
    };
    if name.is_empty() {
        return Err("name part must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name part must be no more than 63 characters");
    }
    if !is_label_name(name) {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', \
                    and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and
/// ending with an alphanumeric character.
///
/// # Errors
///
/// The rule the value breaks, as a lowercase phrase.
pub fn validate_label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_NAME_LEN {
        return Err("must be no more than 63 characters");
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', \
                    and must start and end with an alphanumeric character",
        );
    }
    Ok(())
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn is_label_name(s: &str) -> bool {
    is_edged_run(
        s,
        |b| b.is_ascii_alphanumeric(),
        |b| matches!(b, b'-' | b'_' | b'.'),
    )
}

/// Lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, each starting and
/// ending with an alphanumeric character.
fn is_dns_subdomain(s: &str) -> bool {
    s.split('.')
        .all(|label| is_edged_run(label, is_lower_alnum, |b| b == b'-'))
}

/// Non-empty, every byte `edge` or `inner`, and the first and last bytes `edge`.
fn is_edged_run(s: &str, edge: impl Fn(u8) -> bool, inner: impl Fn(u8) -> bool) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            edge(first) && edge(last) && bytes.iter().all(|&b| edge(b) || inner(b))
        }
        _ => false,
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// One requirement of a label selector, on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals {
        /// Label key.
        key: String,
        /// Required value (may be empty).
        value: String,
    },
    /// `key!=value`: the label is absent or has another value.
    NotEquals {
        /// Label key.
        key: String,
        /// Excluded value (may be empty).
        value: String,
    },
    /// `key in (a, b)`: the label is present with one of these values.
    In {
        /// Label key.
        key: String,
        /// Allowed values; never empty.
        values: BTreeSet<String>,
    },
    /// `key notin (a, b)`: the label is absent or has none of these values.
    NotIn {
        /// Label key.
        key: String,
        /// Excluded values; never empty.
        values: BTreeSet<String>,
    },
    /// `key`: the label is present, whatever its value.
    Exists {
        /// Label key.
        key: String,
    },
    /// `!key`: the label is absent.
    DoesNotExist {
        /// Label key.
        key: String,
    },
}

impl Requirement {
    /// The label key this requirement is about.
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals { key, .. }
            | Requirement::NotEquals { key, .. }
            | Requirement::In { key, .. }
            | Requirement::NotIn { key, .. }
            | Requirement::Exists { key }
            | Requirement::DoesNotExist { key } => key,
        }
    }

    /// Whether `labels` satisfy this requirement. As in Kubernetes, the negative requirements
    /// (`!=`, `notin`, `!key`) are satisfied when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let found = labels.get(self.key());
        match self {
            Requirement::Equals { value, .. } => found == Some(value),
            Requirement::NotEquals { value, .. } => found != Some(value),
            Requirement::In { values, .. } => found.is_some_and(|v| values.contains(v)),
            Requirement::NotIn { values, .. } => !found.is_some_and(|v| values.contains(v)),
            Requirement::Exists { .. } => found.is_some(),
            Requirement::DoesNotExist { .. } => found.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn set(f: &mut fmt::Formatter<'_>, values: &BTreeSet<String>) -> fmt::Result {
            f.write_str("(")?;
            write_comma_separated(f, values)?;
            f.write_str(")")
        }
        match self {
            Requirement::Equals { key, value } => write!(f, "{key}={value}"),
            Requirement::NotEquals { key, value } => write!(f, "{key}!={value}"),
            Requirement::In { key, values } => {
                write!(f, "{key} in ")?;
                set(f, values)
            }
            Requirement::NotIn { key, values } => {
                write!(f, "{key} notin ")?;
                set(f, values)
            }
            Requirement::Exists { key } => f.write_str(key),
            Requirement::DoesNotExist { key } => write!(f, "!{key}"),
        }
    }
}

/// A parsed label selector: a conjunction of requirements, all of which must hold.
///
/// Requirements are kept sorted by key (stably), as Kubernetes does, so that two selectors
/// written in a different order compare equal and print the same.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Converts a Kubernetes `metav1.LabelSelector`: each `matchLabels` entry becomes an
    /// [`Requirement::Equals`], each `matchExpressions` entry the requirement its operator
    /// names (`In`, `NotIn` with at least one value; `Exists`, `DoesNotExist` with none).
    /// An empty `metav1` selector becomes an empty selector, which matches everything;
    /// callers that must refuse that (a Service without selector is fine, a Deployment is
    /// not) check [`LabelSelector::is_empty`].
    ///
    /// # Errors
    ///
    /// An invalid key or value, an unknown operator or a wrong number of values.
    pub fn from_meta(sel: &metav1::LabelSelector) -> Result<Self> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            let context = || format!("label selector matchLabels[{key:?}]");
            check_key(key, context)?;
            check_value(value, context)?;
            requirements.push(Requirement::Equals {
                key: key.clone(),
                value: value.clone(),
            });
        }
        for (index, expr) in sel.match_expressions.iter().flatten().enumerate() {
            let invalid = |reason: String| SelectorError::InvalidExpression {
                index,
                key: expr.key.clone(),
                reason,
            };
            check_key(&expr.key, || {
                format!("label selector matchExpressions[{index}]")
            })?;
            let values = expr.values.as_deref().unwrap_or_default();
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(invalid(format!(
                            "operator {} needs at least one value",
                            expr.operator
                        )));
                    }
                    let mut set = BTreeSet::new();
                    for (i, value) in values.iter().enumerate() {
                        check_value(value, || {
                            format!("label selector matchExpressions[{index}].values[{i}]")
                        })?;
                        set.insert(value.clone());
                    }
                    if expr.operator == "In" {
                        Requirement::In { key, values: set }
                    } else {
                        Requirement::NotIn { key, values: set }
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(invalid(format!(
                            "operator {} takes no values",
                            expr.operator
                        )));
                    }
                    if expr.operator == "Exists" {
                        Requirement::Exists { key }
                    } else {
                        Requirement::DoesNotExist { key }
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown operator {other:?}, expected In, NotIn, Exists or DoesNotExist"
                    )))
                }
            };
            requirements.push(requirement);
        }
        Ok(Self::from_requirements(requirements))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key().cmp(b.key()));
        LabelSelector { requirements }
    }

    /// Whether `labels` satisfy every requirement (always true for an empty selector).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirements, and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form: requirements sorted by key, comma separated, no spaces except
    /// around `in`/`notin`; it parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comma_separated(f, &self.requirements)
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    /// Parses `kubectl -l` syntax: comma-separated `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`,
    /// `k notin (v1)`, `k`, `!k`, with any whitespace between tokens. Values may be empty
    /// (`k=`, `k in ()` means the value ""), as in Kubernetes. An empty or blank string is
    /// the empty selector.
    fn from_str(input: &str) -> Result<Self> {
        let tokens = lex(input);
        let mut parser = Parser {
            input,
            tokens,
            next: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().kind != TokenKind::End {
            loop {
                requirements.push(parser.requirement()?);
                let tok = parser.bump();
                match tok.kind {
                    TokenKind::Comma => continue,
                    TokenKind::End => break,
                    _ => return Err(parser.syntax(tok, "expected ',' or the end")),
                }
            }
        }
        Ok(Self::from_requirements(requirements))
    }
}

/// Writes the items separated by `,` (no spaces), as selectors print their parts.
fn write_comma_separated<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: impl IntoIterator<Item = T>,
) -> fmt::Result {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

fn check_key(key: &str, context: impl FnOnce() -> String) -> Result<()> {
    validate_label_key(key).map_err(|reason| SelectorError::InvalidKey {
        context: context(),
        key: key.to_owned(),
        reason,
    })
}

fn check_value(value: &str, context: impl FnOnce() -> String) -> Result<()> {
    validate_label_value(value).map_err(|reason| SelectorError::InvalidValue {
        context: context(),
        value: value.to_owned(),
        reason,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind<'a> {
    /// A run of characters other than whitespace and `=!(),`; `in` and `notin` are
    /// identifiers that the parser reads as keywords where an operator is expected.
    Ident(&'a str),
    /// `=`
    Eq,
    /// `==`
    DoubleEq,
    /// `!=`
    NotEq,
    /// `!` not followed by `=`
    Bang,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
    /// End of input.
    End,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// Byte offset of the token's first character.
    position: usize,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Ident(s) => format!("found {s:?}"),
            TokenKind::Eq => "found '='".to_owned(),
            TokenKind::DoubleEq => "found '=='".to_owned(),
            TokenKind::NotEq => "found '!='".to_owned(),
            TokenKind::Bang => "found '!'".to_owned(),
            TokenKind::Open => "found '('".to_owned(),
            TokenKind::Close => "found ')'".to_owned(),
            TokenKind::Comma => "found ','".to_owned(),
            TokenKind::End => "found the end".to_owned(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',')
}

fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        let kind = match c {
            c if c.is_whitespace() => continue,
            '=' | '!' => {
                if chars.next_if(|&(_, n)| n == '=').is_some() {
                    if c == '=' {
                        TokenKind::DoubleEq
                    } else {
                        TokenKind::NotEq
                    }
                } else if c == '=' {
                    TokenKind::Eq
                } else {
                    TokenKind::Bang
                }
            }
            '(' => TokenKind::Open,
            ')' => TokenKind::Close,
            ',' => TokenKind::Comma,
            _ => {
                let mut end = pos + c.len_utf8();
                while let Some((p, n)) =
                    chars.next_if(|&(_, n)| !n.is_whitespace() && !is_special(n))
                {
                    end = p + n.len_utf8();
                }
                TokenKind::Ident(&input[pos..end])
            }
        };
        tokens.push(Token {
            kind,
            position: pos,
        });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        position: input.len(),
    });
    tokens
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        // The lexer always ends the list with `End`, and `bump` never moves past it.
        self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let tok = self.peek();
        if tok.kind != TokenKind::End {
            self.next += 1;
        }
        tok
    }

    fn syntax(&self, tok: Token<'_>, expected: &str) -> SelectorError {
        SelectorError::LabelSyntax {
            input: self.input.to_owned(),
            position: tok.position,
            reason: format!("{expected}, {}", tok.describe()),
        }
    }

    fn context(&self, tok: Token<'_>) -> String {
        format!(
            "label selector {:?} at position {}",
            self.input, tok.position
        )
    }

    fn key(&mut self) -> Result<String> {
        let tok = self.bump();
        match tok.kind {
            TokenKind::Ident(key) => {
                check_key(key, || self.context(tok))?;
                Ok(key.to_owned())
            }
            _ => Err(self.syntax(tok, "expected a label key")),
        }
    }

    fn requirement(&mut self) -> Result<Requirement> {
        if self.peek().kind == TokenKind::Bang {
            self.bump();
            let key = self.key()?;
            return Ok(Requirement::DoesNotExist { key });
        }
        let key = self.key()?;
        let tok = self.peek();
        let requirement = match tok.kind {
            TokenKind::Comma | TokenKind::End => Requirement::Exists { key },
            TokenKind::Eq | TokenKind::DoubleEq => {
                self.bump();
                let value = self.exact_value()?;
                Requirement::Equals { key, value }
            }
            TokenKind::NotEq => {
                self.bump();
                let value = self.exact_value()?;
                Requirement::NotEquals { key, value }
            }
            TokenKind::Ident("in") => {
                self.bump();
                let values = self.value_set()?;
                Requirement::In { key, values }
            }
            TokenKind::Ident("notin") => {
                self.bump();
                let values = self.value_set()?;
                Requirement::NotIn { key, values }
            }
            _ => {
                return Err(self.syntax(
                    tok,
                    "expected '=', '==', '!=', 'in', 'notin', ',' or the end after a key",
                ))
            }
        };
        Ok(requirement)
    }

    /// The value after `=`, `==` or `!=`; empty when a `,` or the end follows directly.
    fn exact_value(&mut self) -> Result<String> {
        let tok = self.peek();
        match tok.kind {
            TokenKind::Ident(value) => {
                self.bump();
                check_value(value, || self.context(tok))?;
                Ok(value.to_owned())
            }
            TokenKind::Comma | TokenKind::End => Ok(String::new()),
            _ => Err(self.syntax(tok, "expected a label value, ',' or the end")),
        }
    }

    /// `( v1, v2, ... )`; an empty item (`()`, `(a,)`) is the empty value.
    fn value_set(&mut self) -> Result<BTreeSet<String>> {
        let open = self.bump();
        if open.kind != TokenKind::Open {
            return Err(self.syntax(open, "expected '(' after 'in' or 'notin'"));
        }
        let mut values = BTreeSet::new();
        loop {
            let tok = self.bump();
            match tok.kind {
                TokenKind::Ident(value) => {
                    check_value(value, || self.context(tok))?;
                    values.insert(value.to_owned());
                    let sep = self.bump();
                    match sep.kind {
                        TokenKind::Comma => continue,
                        TokenKind::Close => break,
                        _ => return Err(self.syntax(sep, "expected ',' or ')' in a value list")),
                    }
                }
                TokenKind::Comma => {
                    values.insert(String::new());
                }
                TokenKind::Close => {
                    values.insert(String::new());
                    break;
                }
                _ => return Err(self.syntax(tok, "expected a label value, ',' or ')'")),
            }
        }
        Ok(values)
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// The comparison of a field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One term of a field selector: `path=value`, `path==value` or `path!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path into the object, such as `spec.nodeName`.
    pub path: String,
    /// How the field is compared.
    pub op: FieldOp,
    /// The value compared with; may be empty.
    pub value: String,
}

impl FieldRequirement {
    /// Whether `obj` (an object in its JSON form) satisfies this term.
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        let equal = field_text(obj, &self.path) == self.value;
        match self.op {
            FieldOp::Equals => equal,
            FieldOp::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        f.write_str(match self.op {
            FieldOp::Equals => "=",
            FieldOp::NotEquals => "!=",
        })?;
        for c in self.value.chars() {
            if matches!(c, '\\' | ',' | '=') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// The text a field compares as: a string as itself, a number or boolean as its JSON text,
/// a missing field or `null` as "". Path segments index objects by key and arrays by number.
fn field_text<'v>(obj: &'v serde_json::Value, path: &str) -> Cow<'v, str> {
    let mut current = obj;
    for segment in path.split('.') {
        let next = match current {
            serde_json::Value::Object(map) => map.get(segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(value) => current = value,
            None => return Cow::Borrowed(""),
        }
    }
    match current {
        serde_json::Value::Null => Cow::Borrowed(""),
        serde_json::Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// A field selector: a conjunction of `path=value`, `path==value`, `path!=value` terms, such
/// as `metadata.name=x,spec.nodeName!=,status.phase==Running`. An empty selector matches
/// everything.
///
/// Which paths are supported for a kind is the server's decision ([`FieldSelector::fields`]);
/// matching itself works on any path of the object's JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Whether `obj` (an object in its JSON form) satisfies every term. A missing field or
    /// `null` compares as "", numbers and booleans by their JSON text (`"3"`, `"true"`).
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.requirements.iter().all(|r| r.matches(obj))
    }

    /// The field paths used, in order, so the server can refuse ones it does not support.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.path.as_str())
    }

    /// The value required by the first `=`/`==` term on `path`, if any; the server uses it
    /// to narrow a list to one key (`metadata.name`, `metadata.namespace`).
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.op == FieldOp::Equals && r.path == path)
            .map(|r| r.value.as_str())
    }

    /// Whether the selector has no terms, and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms, in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }
}

impl fmt::Display for FieldSelector {
    /// Terms comma separated, `==` written as `=`, and `\`, `,`, `=` in values escaped with
    /// `\`; it parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comma_separated(f, &self.requirements)
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    /// Parses comma-separated `path=value`, `path==value`, `path!=value` terms. Values may be
    /// empty; `\,`, `\=` and `\\` escape those characters in values; whitespace around paths
    /// and values is ignored; empty terms are skipped, as in Kubernetes.
    fn from_str(input: &str) -> Result<Self> {
        let syntax = |position: usize, reason: &str| SelectorError::FieldSyntax {
            input: input.to_owned(),
            position,
            reason: reason.to_owned(),
        };
        let mut requirements = Vec::new();
        for (start, term) in split_unescaped_commas(input) {
            if term.trim().is_empty() {
                continue;
            }
            let Some((op_at, op, op_len)) = find_operator(term) else {
                return Err(syntax(
                    start,
                    &format!("term {term:?} has no operator, expected '=', '==' or '!='"),
                ));
            };
            let path = term[..op_at].trim();
            if path.is_empty() {
                return Err(syntax(start, "missing field path before the operator"));
            }
            if let Some(bad) = path.find(|c: char| c.is_whitespace() || c == '\\') {
                return Err(syntax(
                    start + bad,
                    &format!("field path {path:?} contains whitespace or '\\'"),
                ));
            }
            let raw = &term[op_at + op_len..];
            let value_start = start + op_at + op_len;
            let value = unescape(raw.trim())
                .map_err(|offset| syntax(value_start + offset, "invalid escape sequence"))?;
            requirements.push(FieldRequirement {
                path: path.to_owned(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }
}

/// Splits at commas not preceded by `\`, with each part's byte offset.
fn split_unescaped_commas(input: &str) -> Vec<(usize, &str)> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push((start, &input[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push((start, &input[start..]));
    parts
}

/// The first unescaped operator of a term: its offset, kind and length.
fn find_operator(term: &str) -> Option<(usize, FieldOp, usize)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let rest = &term[i..];
        if c == '\\' {
            escaped = true;
        } else if rest.starts_with("!=") {
            return Some((i, FieldOp::NotEquals, 2));
        } else if rest.starts_with("==") {
            return Some((i, FieldOp::Equals, 2));
        } else if c == '=' {
            return Some((i, FieldOp::Equals, 1));
        }
    }
    None
}

/// Resolves `\\`, `\,`, `\=`; any other escape is an error at its byte offset.
fn unescape(raw: &str) -> std::result::Result<String, usize> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, n @ ('\\' | ',' | '='))) => out.push(n),
                _ => return Err(i),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn parse(s: &str) -> LabelSelector {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match s.parse::<LabelSelector>() {
            Ok(sel) => panic!("{s:?} should not parse, got {sel:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_operator_parses_to_its_requirement() {
        let sel = parse("a=1,b==2,c!=3,d in (x, y),e notin (z),f,!g");
        assert_eq!(
            sel.requirements(),
            &[
                Requirement::Equals {
                    key: "a".into(),
                    value: "1".into()
                },
                Requirement::Equals {
                    key: "b".into(),
                    value: "2".into()
                },
                Requirement::NotEquals {
                    key: "c".into(),
                    value: "3".into()
                },
                Requirement::In {
                    key: "d".into(),
                    values: set(&["x", "y"])
                },
                Requirement::NotIn {
                    key: "e".into(),
                    values: set(&["z"])
                },
                Requirement::Exists { key: "f".into() },
                Requirement::DoesNotExist { key: "g".into() },
            ]
        );
    }

    #[test]
    fn whitespace_between_tokens_is_ignored() {
        assert_eq!(
            parse("  app = web ,  tier  in(a ,b ) , ! legacy , env!= prod "),
            parse("app=web,tier in (a,b),!legacy,env!=prod")
        );
    }

    #[test]
    fn empty_and_blank_strings_are_the_empty_selector() {
        for s in ["", "   ", "\t"] {
            let sel = parse(s);
            assert!(sel.is_empty());
            assert!(sel.matches(&labels(&[("a", "b")])));
            assert!(sel.matches(&BTreeMap::new()));
            assert_eq!(sel.to_string(), "");
        }
    }

    #[test]
    fn display_parses_back_to_the_same_selector() {
        for s in [
            "app=web",
            "tier!=db,app==web",
            "env in (prod, staging),!legacy,example.com/owner",
            "a notin (x),b in (,y),c=,d!=",
            "k in ()",
            "x.io/a-b_c.d=V-1_2.3",
        ] {
            let sel = parse(s);
            let printed = sel.to_string();
            assert_eq!(parse(&printed), sel, "{s:?} printed as {printed:?}");
            assert_eq!(parse(&printed).to_string(), printed);
        }
    }

    #[test]
    fn display_is_canonical_and_sorted_by_key() {
        assert_eq!(
            parse("z=1, a in (q,p), m notin (b), !c, b").to_string(),
            "a in (p,q),b,!c,m notin (b),z=1"
        );
        assert_eq!(parse("b=1,a=2"), parse("a=2,b=1"));
        assert_eq!(parse("a==1").to_string(), "a=1");
    }

    #[test]
    fn empty_values_are_allowed_as_in_kubernetes() {
        let sel = parse("a=");
        assert!(sel.matches(&labels(&[("a", "")])));
        assert!(!sel.matches(&labels(&[("a", "x")])));
        assert!(!sel.matches(&BTreeMap::new()));
        assert_eq!(
            parse("k in ()").requirements(),
            &[Requirement::In {
                key: "k".into(),
                values: set(&[""])
            }]
        );
        assert_eq!(
            parse("k in (a,)").requirements(),
            &[Requirement::In {
                key: "k".into(),
                values: set(&["a", ""])
            }]
        );
    }

    #[test]
    fn equality_and_set_operators_match_as_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert!(parse("app=web").matches(&web));
        assert!(!parse("app=db").matches(&web));
        assert!(parse("app!=db").matches(&web));
        assert!(!parse("app!=web").matches(&web));
        assert!(parse("tier in (front, back)").matches(&web));
        assert!(!parse("tier in (back)").matches(&web));
        assert!(parse("tier notin (back)").matches(&web));
        assert!(!parse("tier notin (front)").matches(&web));
        assert!(parse("app").matches(&web));
        assert!(!parse("!app").matches(&web));
        assert!(parse("app=web,tier=front").matches(&web));
        assert!(!parse("app=web,tier=back").matches(&web));
    }

    #[test]
    fn negative_requirements_match_when_the_key_is_absent() {
        let none = labels(&[("other", "x")]);
        assert!(parse("app!=web").matches(&none));
        assert!(parse("app notin (web)").matches(&none));
        assert!(parse("!app").matches(&none));
        assert!(!parse("app=web").matches(&none));
        assert!(!parse("app in (web)").matches(&none));
        assert!(!parse("app").matches(&none));
    }

    #[test]
    fn syntax_errors_name_the_input_and_the_position() {
        let e = parse_err("app=web,");
        assert!(e.contains(r#"label selector "app=web,""#), "{e}");
        assert!(e.contains("position 8"), "{e}");
        assert!(e.contains("expected a label key"), "{e}");

        let e = parse_err("app in web");
        assert!(e.contains("position 7"), "{e}");
        assert!(e.contains("expected '('"), "{e}");

        let e = parse_err("app in (a b)");
        assert!(e.contains("position 10"), "{e}");

        let e = parse_err("app web");
        assert!(e.contains("position 4"), "{e}");
        assert!(e.contains("found \"web\""), "{e}");

        let e = parse_err("app=a=b");
        assert!(e.contains("position 5"), "{e}");

        let e = parse_err(",a");
        assert!(e.contains("position 0"), "{e}");

        let e = parse_err("a in (x");
        assert!(e.contains("position 7"), "{e}");
        assert!(e.contains("found the end"), "{e}");

        let e = parse_err("!");
        assert!(e.contains("position 1"), "{e}");
    }

    #[test]
    fn invalid_keys_and_values_are_refused_with_their_position() {
        let e = parse_err("a=ok,-bad=x");
        assert!(e.contains(r#"invalid label key "-bad""#), "{e}");
        assert!(e.contains("position 5"), "{e}");

        let e = parse_err("app=we!b");
        assert!(e.contains("position"), "{e}");

        let e = parse_err("app=web-");
        assert!(e.contains(r#"invalid label value "web-""#), "{e}");
        assert!(e.contains("position 4"), "{e}");

        let long = "v".repeat(64);
        let e = parse_err(&format!("app={long}"));
        assert!(e.contains("63 characters"), "{e}");

        let e = parse_err("Example.com/app=x");
        assert!(e.contains("prefix"), "{e}");
        let e = parse_err("a/b/c=x");
        assert!(e.contains("one '/'"), "{e}");
        let e = parse_err("/app=x");
        assert!(e.contains("prefix"), "{e}");
        let e = parse_err("example.com/=x");
        assert!(e.contains("name part"), "{e}");
        let e = parse_err("app in (ok, -no)");
        assert!(e.contains(r#""-no""#), "{e}");
        assert!(e.contains("position 12"), "{e}");
    }

    #[test]
    fn label_key_and_value_rules_follow_kubernetes() {
        for ok in [
            "a",
            "A1",
            "a.b-c_d",
            "example.com/app",
            "k8s.io/x",
            &"k".repeat(63),
        ] {
            assert_eq!(validate_label_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "_a",
            &"k".repeat(64),
            "EX.com/a",
            "a..b/c",
            "/",
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
        assert!(validate_label_key(&format!("{}/a", "p".repeat(254))).is_err());
        for ok in ["", "a", "1.2.3", "A_b-c", &"v".repeat(63)] {
            assert_eq!(validate_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-", "a/b", ".a", &"v".repeat(64), "é"] {
            assert!(validate_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metav1_selector_converts_labels_and_expressions() {
        let meta = metav1::LabelSelector {
            match_labels: Some(
                [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
            ),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "edge".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["dev".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "owner".into(),
                    operator: "Exists".into(),
                    values: None,
                },
                metav1::LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: Some(vec![]),
                },
            ]),
        };
        let sel = LabelSelector::from_meta(&meta).unwrap();
        assert_eq!(
            sel,
            parse("app=web,tier in (front,edge),env notin (dev),owner,!legacy")
        );
        assert!(sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("owner", "me")
        ])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("owner", "me"),
            ("legacy", "")
        ])));
    }

    #[test]
    fn empty_metav1_selector_matches_everything() {
        let sel = LabelSelector::from_meta(&metav1::LabelSelector::default()).unwrap();
        assert!(sel.is_empty());
        assert!(sel.matches(&labels(&[("a", "b")])));
        let sel = LabelSelector::from_meta(&metav1::LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        })
        .unwrap();
        assert!(sel.is_empty());
    }

    #[test]
    fn metav1_selector_with_bad_expressions_is_refused() {
        let expr = |op: &str, values: Option<Vec<&str>>| metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "k".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
        };
        for (op, values, needle) in [
            ("In", None, "at least one value"),
            ("NotIn", Some(vec![]), "at least one value"),
            ("Exists", Some(vec!["x"]), "takes no values"),
            ("DoesNotExist", Some(vec!["x"]), "takes no values"),
            ("Equals", Some(vec!["x"]), "unknown operator"),
            ("In", Some(vec!["ok", "not ok"]), "values[1]"),
        ] {
            let e = LabelSelector::from_meta(&expr(op, values))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{op}: {e}");
            assert!(e.contains("matchExpressions[0]"), "{op}: {e}");
        }
        let bad_label = metav1::LabelSelector {
            match_labels: Some([("a b".to_string(), "x".to_string())].into_iter().collect()),
            match_expressions: None,
        };
        let e = LabelSelector::from_meta(&bad_label)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"matchLabels["a b"]"#), "{e}");
    }

    fn fparse(s: &str) -> FieldSelector {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn field_selector_parses_all_operators_and_empty_values() {
        let sel = fparse("metadata.name=x,spec.nodeName!=,status.phase==Running");
        assert_eq!(
            sel.requirements(),
            &[
                FieldRequirement {
                    path: "metadata.name".into(),
                    op: FieldOp::Equals,
                    value: "x".into()
                },
                FieldRequirement {
                    path: "spec.nodeName".into(),
                    op: FieldOp::NotEquals,
                    value: "".into()
                },
                FieldRequirement {
                    path: "status.phase".into(),
                    op: FieldOp::Equals,
                    value: "Running".into()
                },
            ]
        );
        assert_eq!(
            sel.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.nodeName", "status.phase"]
        );
        assert_eq!(sel.exact("metadata.name"), Some("x"));
        assert_eq!(sel.exact("status.phase"), Some("Running"));
        assert_eq!(sel.exact("spec.nodeName"), None);
        assert_eq!(sel.exact("metadata.namespace"), None);
        assert!(!sel.is_empty());
        assert!(fparse("").is_empty());
        assert!(fparse(" , ").is_empty());
    }

    #[test]
    fn field_selector_without_operator_is_refused_with_position() {
        let e = "metadata.name=x,spec.nodeName"
            .parse::<FieldSelector>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"field selector "metadata.name=x,spec.nodeName""#),
            "{e}"
        );
        assert!(e.contains("no operator"), "{e}");
        assert!(e.contains("position 16"), "{e}");
        let e = "=x".parse::<FieldSelector>().unwrap_err().to_string();
        assert!(e.contains("missing field path"), "{e}");
        let e = r"a=b\x".parse::<FieldSelector>().unwrap_err().to_string();
        assert!(e.contains("escape"), "{e}");
        assert!(e.contains("position 3"), "{e}");
    }

    #[test]
    fn field_selector_escapes_round_trip() {
        let sel = fparse(r"metadata.name=a\,b\=c\\d, spec.x == y ");
        assert_eq!(sel.exact("metadata.name"), Some(r"a,b=c\d"));
        assert_eq!(sel.exact("spec.x"), Some("y"));
        let printed = sel.to_string();
        assert_eq!(printed, r"metadata.name=a\,b\=c\\d,spec.x=y");
        assert_eq!(fparse(&printed), sel);
    }

    #[test]
    fn field_selector_matches_json_with_missing_fields_as_empty() {
        let pod = json!({
            "metadata": {"name": "p1", "namespace": "web"},
            "spec": {"nodeName": "n1", "priority": 5, "hostNetwork": false, "containers": [{"name": "c"}]},
            "status": {"phase": null},
        });
        assert!(fparse("metadata.name=p1").matches(&pod));
        assert!(fparse("metadata.name=p1,metadata.namespace=web").matches(&pod));
        assert!(!fparse("metadata.name=p2").matches(&pod));
        assert!(fparse("metadata.name!=p2").matches(&pod));
        assert!(fparse("spec.nodeName!=").matches(&pod));
        assert!(!fparse("spec.nodeName=").matches(&pod));
        assert!(fparse("status.phase=").matches(&pod));
        assert!(fparse("spec.schedulerName=").matches(&pod));
        assert!(fparse("no.such.path=").matches(&pod));
        assert!(!fparse("no.such.path!=").matches(&pod));
        assert!(fparse("spec.priority=5").matches(&pod));
        assert!(fparse("spec.hostNetwork=false").matches(&pod));
        assert!(fparse("spec.containers.0.name=c").matches(&pod));
        assert!(fparse("metadata.name.deeper=").matches(&pod));
        assert!(fparse("").matches(&pod));
    }
}
