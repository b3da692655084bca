//! JSON helpers for the hot paths of controllers, the scheduler and the API server.

use std::borrow::Cow;

use serde_json::Value;

/// A JSON pointer lookup (RFC 6901) that allocates nothing unless a token is escaped.
/// `serde_json::Value::pointer` allocates two strings per token; on the scheduler's and
/// the controllers' passes over every pod that was most of their CPU time.
pub trait At {
    /// The value at `path` ("" is the whole value, "/a/0/b" a member of an element).
    fn at(&self, path: &str) -> Option<&Value>;
}

impl At for Value {
    fn at(&self, path: &str) -> Option<&Value> {
        if path.is_empty() {
            return Some(self);
        }
        let rest = path.strip_prefix('/')?;
        let mut v = self;
        for token in rest.split('/') {
            let token: Cow<'_, str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            v = match v {
                Value::Object(map) => map.get(token.as_ref())?,
                Value::Array(list) => list.get(index(&token)?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// An array index as RFC 6901 writes it: digits, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn it_finds_what_pointer_finds() {
        let v = json!({"a": {"b": [1, {"c": "x"}], "k/8s": {"~t": true}}, "": 5});
        for path in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/01",
            "/a/b/+1",
            "/a/k~18s",
            "/a/k~18s/~0t",
            "/a/x",
            "a",
            "/",
            "/a/b/1/c/d",
        ] {
            assert_eq!(v.at(path), v.pointer(path), "{path}");
        }
    }
}
