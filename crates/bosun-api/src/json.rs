//! JSON helpers for the hot paths of controllers, the scheduler and the API server.

use std::borrow::Cow;

use serde_json::Value;

/// JSON decoded as `serde_json::from_slice` decodes it, errors included, and faster: the
/// input's UTF-8 is checked in one pass over the whole, not once per string (15 % of a
/// pod's decoding). Every object a watch, a cache or the API server reads comes this way.
///
/// # Errors
/// `serde_json::from_slice`'s, for the same input.
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        // Not UTF-8: from_slice finds where, and says so as it always did.
        Err(_) => serde_json::from_slice(bytes),
    }
}

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

/// `stored` (a JSON object as serde_json writes one: compact, members of objects sorted)
/// with the string member `name: value` put into its top-level object member `outer`, where
/// sorting puts it: byte for byte what parsing, inserting and writing again would give,
/// without building the object. A watch sends every stored object with its resource version
/// set this way; parsing and writing it again was most of a watch's cost.
///
/// `None` when `stored` is not valid JSON, not an object, has no object `outer` (or two), a
/// member `name` there already, or is laid out otherwise (white space at the top or in
/// `outer`, an escaped key there, a `\u` or `\/` escape anywhere, nesting deeper than 127):
/// the caller then takes the slow path, which decides the rest. Valid JSON laid out
/// otherwise further in (members out of order, as Go writes them) keeps its layout: the
/// same object, with `name` set in `outer`.
pub fn insert_member(stored: &[u8], outer: &str, name: &str, value: &str) -> Option<Vec<u8>> {
    // One scan of `outer`: the insertion refuses a `name` already there. (Every watch
    // event comes this way.)
    let object = Compact::parse(stored)?;
    let (fields, close) = object.object(unique(stored, &object.top, outer)??)?;
    let m = member(name, &serde_json::to_vec(value).ok()?)?;
    let (pos, _, with) = insertion(stored, &fields, close, name, m)?;
    Some([&stored[..pos], &with, &stored[pos..]].concat())
}

/// `"name":value` (`value` JSON already).
fn member(name: &str, value: &[u8]) -> Option<Vec<u8>> {
    let mut m = serde_json::to_vec(name).ok()?;
    m.push(b':');
    m.extend_from_slice(value);
    Some(m)
}

/// A stored object (compact, as serde_json writes one) read and edited member by member,
/// without building it: what binding a pod or setting its resource version touches is a few
/// members of a kilobyte of JSON.
pub struct Compact<'a> {
    bytes: &'a [u8],
    top: Vec<raw::Member>,
}

impl<'a> Compact<'a> {
    /// `None` when `stored` is not valid JSON, not an object, not compact at the top, or
    /// has a top-level key with an escape (or a `\u` or `\/` escape anywhere): its readers
    /// then take their slow path, which decides the rest.
    pub fn parse(stored: &'a [u8]) -> Option<Self> {
        // Valid JSON first (parsing without building anything), so that the scans may take
        // it for granted and anything else gets the slow path's answer.
        // (IgnoredAny checks neither UTF-8 inside strings nor escapes: see raw. Nor does it
        // read numbers, only their syntax: one no `Value` holds, such as `1e400`, passes
        // here and fails the reader. The API never stores one, since it writes what it
        // decoded; only a raw etcd write can. Reading every number here took twice the
        // time of this whole check.)
        std::str::from_utf8(stored).ok()?;
        serde_json::from_slice::<serde::de::IgnoredAny>(stored).ok()?;
        let (top, end) = raw::members(stored, 0)?;
        if end != stored.len() {
            return None;
        }
        for m in &top {
            raw::key(stored, m)?;
        }
        Some(Compact { bytes: stored, top })
    }

    /// The top-level member `name`'s value as written: `Some(None)` when there is none,
    /// `None` when there are two.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        Some(unique(self.bytes, &self.top, name)?.map(|m| &self.bytes[m.value.clone()]))
    }

    /// The value, as written, of member `name` of the top-level object `outer`:
    /// `Some(None)` when `outer` has no such member; `None` when `outer` is missing (or
    /// there are two), is not a compact object, or holds `name` twice or a key with an
    /// escape.
    pub fn get_in(&self, outer: &str, name: &str) -> Option<Option<&'a [u8]>> {
        self.members_of(outer)?.get(name)
    }

    /// The top-level object `outer`'s members, read once for several lookups; `None`
    /// where [`Compact::get_in`] would be for any name.
    pub fn members_of(&self, outer: &str) -> Option<Members<'a>> {
        let (members, _) = self.object(unique(self.bytes, &self.top, outer)??)?;
        Some(Members {
            bytes: self.bytes,
            members,
        })
    }

    /// The object with each `(outer, name, value)` set: member `name` of the top-level
    /// object `outer` takes `value` (JSON, compact), where it is or, new, where sorting
    /// puts it; a missing `outer` is added, where sorting puts it, as an object of that
    /// one member. `None` where [`Compact::get_in`] would be, and for two edits of one
    /// `outer`.
    pub fn set_in(&self, sets: &[(&str, &str, &[u8])]) -> Option<Vec<u8>> {
        // (where the replaced bytes start, where they end, what goes there)
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::with_capacity(sets.len());
        for (i, (outer, name, value)) in sets.iter().enumerate() {
            if sets[..i].iter().any(|(o, _, _)| o == outer) {
                return None;
            }
            edits.push(match unique(self.bytes, &self.top, outer)? {
                Some(o) => {
                    let (fields, close) = self.object(o)?;
                    match unique(self.bytes, &fields, name)? {
                        Some(m) => (m.value.start, m.value.end, value.to_vec()),
                        None => insertion(self.bytes, &fields, close, name, member(name, value)?)?,
                    }
                }
                None => {
                    let object = [b"{", &member(name, value)?[..], b"}"].concat();
                    let m = member(outer, &object)?;
                    insertion(self.bytes, &self.top, self.bytes.len(), outer, m)?
                }
            });
        }
        edits.sort_by_key(|e| e.0);
        let mut out =
            Vec::with_capacity(self.bytes.len() + edits.iter().map(|e| e.2.len()).sum::<usize>());
        let mut at = 0;
        for (start, end, with) in edits {
            out.extend_from_slice(&self.bytes[at..start]);
            out.extend_from_slice(&with);
            at = end;
        }
        out.extend_from_slice(&self.bytes[at..]);
        Some(out)
    }

    /// The members of the top-level member `m`'s value, a compact object, and where it
    /// ends.
    fn object(&self, m: &raw::Member) -> Option<(Vec<raw::Member>, usize)> {
        let (fields, close) = raw::members(self.bytes, m.value.start)?;
        (close == m.value.end).then_some((fields, close))
    }
}

/// The members of one object of a [`Compact`].
pub struct Members<'a> {
    bytes: &'a [u8],
    members: Vec<raw::Member>,
}

impl<'a> Members<'a> {
    /// Member `name`'s value as written, as [`Compact::get_in`] reads it.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        Some(self.span(name)?.map(|at| &self.bytes[at]))
    }

    /// Where member `name`'s value is in the whole object's bytes, as
    /// [`Members::get`] finds it.
    pub fn span(&self, name: &str) -> Option<Option<std::ops::Range<usize>>> {
        Some(unique(self.bytes, &self.members, name)?.map(|m| m.value.clone()))
    }
}

/// The one member `name` of `members`: `Some(None)` when there is none; `None` when there
/// are two, or a key has an escape (it might spell `name`).
fn unique<'m>(b: &[u8], members: &'m [raw::Member], name: &str) -> Option<Option<&'m raw::Member>> {
    let mut found = None;
    for m in members {
        if raw::key(b, m)? == name.as_bytes() && found.replace(m).is_some() {
            return None;
        }
    }
    Some(found)
}

/// Where `member` (`"key":value`) goes among `members` of the object that ends just before
/// `close` (its closing brace at `close - 1`): before the first member whose key sorts
/// after `key`, else last; as an edit that replaces nothing. `None` when `key` is there
/// already.
fn insertion(
    b: &[u8],
    members: &[raw::Member],
    close: usize,
    key: &str,
    member: Vec<u8>,
) -> Option<(usize, usize, Vec<u8>)> {
    let mut at = None;
    for m in members {
        match raw::key(b, m)?.cmp(key.as_bytes()) {
            std::cmp::Ordering::Equal => return None,
            std::cmp::Ordering::Greater if at.is_none() => at = Some(m.key_start),
            _ => {}
        }
    }
    let with = match at {
        Some(_) => [&member[..], b","].concat(),
        None if members.is_empty() => member,
        None => [b",", &member[..]].concat(),
    };
    let pos = at.unwrap_or(close - 1);
    Some((pos, pos, with))
}

/// A scanner over JSON already known to be valid.
mod raw {
    use std::ops::Range;

    /// One member of an object: where its key starts (the quote) and its value's bytes.
    pub struct Member {
        pub key_start: usize,
        pub key_end: usize,
        pub value: Range<usize>,
    }

    /// A member's key without its quotes, if it has no escapes (a key with one would need
    /// unescaping to compare).
    pub fn key<'a>(b: &'a [u8], m: &Member) -> Option<&'a [u8]> {
        let k = b.get(m.key_start + 1..m.key_end - 1)?;
        (!k.contains(&b'\\')).then_some(k)
    }

    /// Just past the string whose opening quote is at `i`; `None` for a `\u` or `\/`
    /// escape (serde_json writes neither for text; a `\u` may be a lone surrogate, which
    /// the slow path refuses).
    fn string_end(b: &[u8], i: usize) -> Option<usize> {
        let mut j = i + 1;
        while j < b.len() {
            match b[j] {
                b'\\' if matches!(b.get(j + 1), Some(b'u' | b'/')) => return None,
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    }

    /// Nesting the slow path accepts at most (serde_json's recursion limit).
    const MAX_DEPTH: usize = 127;

    /// Just past the value that starts at `i`; `None` for white space where a scalar
    /// should start or inside one, and for nesting deeper than the slow path parses.
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' if depth >= MAX_DEPTH => return None,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']'))
                    .map_or(b.len(), |p| i + p);
                (!b[i..end].iter().any(u8::is_ascii_whitespace)).then_some(end)
            }
            _ => None,
        }
    }

    /// The members of the compact object that starts at `i`, and where it ends (just past
    /// its closing brace); `None` when there is no object at `i` or it is not compact.
    pub fn members(b: &[u8], i: usize) -> Option<(Vec<Member>, usize)> {
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let mut out = Vec::new();
        let mut j = i + 1;
        if b.get(j) == Some(&b'}') {
            return Some((out, j + 1));
        }
        loop {
            if b.get(j) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(b, j)?;
            if b.get(key_end) != Some(&b':') {
                return None;
            }
            let value_end = value_end(b, key_end + 1)?;
            out.push(Member {
                key_start: j,
                key_end,
                value: key_end + 1..value_end,
            });
            match b.get(value_end) {
                Some(b',') => j = value_end + 1,
                Some(b'}') => return Some((out, value_end + 1)),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_bytes_decodes_and_fails_as_from_slice_does() {
        let inputs: [&[u8]; 10] = [
            b"{\"a\":[1,2.5,-3e2,true,null],\"b\":{\"c\":\"\\u00e9\\n\\\"\",\"d\":\"\xc3\xa9\"}}",
            b"  [1, 2]  ",
            b"\"\\ud83d\\ude00\"",
            b"",
            b"{",
            b"{\"a\":1,}",
            b"{\"a\":\"\xff\"}",
            b"\xef\xbb\xbf{}",
            b"\"\\ud800\"",
            b"{\"a\":01}",
        ];
        for input in inputs {
            let want = serde_json::from_slice::<Value>(input).map_err(|e| e.to_string());
            let got = from_bytes::<Value>(input).map_err(|e| e.to_string());
            assert_eq!(got, want, "{}", String::from_utf8_lossy(input));
        }
    }

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

    /// What the slow path gives: parse, set the member, write again.
    fn slow(v: &Value, name: &str, value: &str) -> Vec<u8> {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert(name.into(), Value::String(value.into()));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn inserting_a_member_writes_what_parsing_and_writing_again_would() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "annotations": {"a\\\"b": "c,}]{[", "k": "\t\n\u{e9}\u{8}\u{c}\r"},
                "creationTimestamp": "2026-12-05T07:00:00Z", "generateName": "web-",
                "generation": 1, "labels": {"app": "web"}, "name": "web-x", "namespace": "ns",
                "ownerReferences": [{"controller": true, "name": "rs", "uid": "u1"}],
                "uid": "u2"},
                "spec": {"containers": [{"image": "i", "resources": {"x": [1.5, -2e-7, null, false]}}]},
                "status": {"phase": "Running"}}),
            // Sorts last in metadata; metadata is not the last top-level member.
            json!({"metadata": {"name": "n", "namespace": "d"}, "zz": {}}),
            // Empty metadata, first member.
            json!({"a": [], "metadata": {}}),
            json!({"metadata": {"uid": "u"}}),
        ];
        for v in &objects {
            let stored = serde_json::to_vec(v).unwrap_or_default();
            let fast = insert_member(&stored, "metadata", "resourceVersion", "42");
            assert_eq!(fast, Some(slow(v, "resourceVersion", "42")), "{v}");
        }
    }

    #[test]
    fn inserting_a_member_leaves_anything_unusual_to_the_slow_path() {
        for stored in [
            &br#"{"metadata":{"name":"n","resourceVersion":"7"}}"#[..], // already there
            br#"{"kind":"Pod"}"#,                                       // no metadata
            br#"{"metadata":"x"}"#,                                     // not an object
            br#"{"metadata":{},"metadata":{}}"#,                        // twice
            br#"{"metadata":{"a\u0062":1}}"#,                           // escaped key
            br#"{"metadata":{},"metad\u0061ta":{}}"#,                   // maybe twice
            br#"{"metadata":{"annotations": {"a":"b"},"name":"x"}}"#,   // space before a value
            br#"{"metadata":{"name":"x" }}"#,                           // space after one
            br#"{"metadata":{"generation":1 ,"name":"x"}}"#,
            br#"{"metadata":{"name":"\ud800"}}"#, // lone surrogate
            br#"{"metadata":{"name":"a\/b"}}"#,
            b"{\"metadata\":{\"name\":\"\xff\"}}", // not UTF-8
            br#"{ "metadata":{}}"#,                // not compact
            br#"{"metadata":{"name":"n"} }"#,
            br#"[{"metadata":{}}]"#,          // not an object
            br#"{"metadata":{"name":"n"}"#,   // truncated
            br#"{"metadata":{"name":"n"}}x"#, // trailing bytes
            b"k8s:enc:aesgcm:v1:key1:...",    // encrypted
            b"",
        ] {
            assert_eq!(
                insert_member(stored, "metadata", "resourceVersion", "1"),
                None,
                "{}",
                String::from_utf8_lossy(stored)
            );
        }
    }

    #[test]
    fn a_compact_object_reads_and_sets_members_as_parsing_would() {
        let v = json!({"apiVersion": "v1", "metadata": {"name": "n", "uid": "u"},
            "spec": {"a": 1, "z": [1, {"b": "}"}]}, "status": {"phase": "Pending"}});
        let stored = serde_json::to_vec(&v).unwrap_or_default();
        let Some(c) = Compact::parse(&stored) else {
            panic!("refused what serde_json wrote");
        };
        assert_eq!(c.get("apiVersion"), Some(Some(&br#""v1""#[..])));
        assert_eq!(c.get("kind"), Some(None));
        assert_eq!(c.get_in("metadata", "uid"), Some(Some(&br#""u""#[..])));
        assert_eq!(c.get_in("spec", "z"), Some(Some(&br#"[1,{"b":"}"}]"#[..])));
        assert_eq!(c.get_in("spec", "nodeName"), Some(None));
        assert_eq!(c.get_in("nothere", "x"), None);
        assert_eq!(c.get_in("apiVersion", "x"), None); // not an object
                                                       // Replace one member, insert one, add a missing outer object: all at once.
        let edited = c.set_in(&[
            ("spec", "a", b"2"),
            ("metadata", "labels", br#"{"k":"v"}"#),
            ("extra", "x", b"[]"),
            ("status", "zz", b"null"),
        ]);
        let mut expected = v.clone();
        expected["spec"]["a"] = json!(2);
        expected["metadata"]["labels"] = json!({"k": "v"});
        expected["extra"] = json!({"x": []});
        expected["status"]["zz"] = Value::Null;
        assert_eq!(edited, serde_json::to_vec(&expected).ok());
        // First and last places, and an empty object.
        let v = json!({"b": {}, "m": {"c": 1}});
        let stored = serde_json::to_vec(&v).unwrap_or_default();
        let c = Compact::parse(&stored);
        let edited =
            c.and_then(|c| c.set_in(&[("b", "k", b"1"), ("a", "a", b"0"), ("m", "a", b"2")]));
        let expected = json!({"a": {"a": 0}, "b": {"k": 1}, "m": {"a": 2, "c": 1}});
        assert_eq!(edited, serde_json::to_vec(&expected).ok());
        // Two edits of one object are refused, not half done.
        let c = Compact::parse(&stored);
        assert_eq!(
            c.and_then(|c| c.set_in(&[("m", "a", b"1"), ("m", "b", b"2")])),
            None
        );
    }

    #[test]
    fn a_compact_object_refuses_what_it_cannot_read_for_sure() {
        assert!(Compact::parse(br#"{"a\u0062":1}"#).is_none()); // escaped top-level key
        assert!(Compact::parse(br#"{ "a":1}"#).is_none());
        assert!(Compact::parse(br#"{"a":1}x"#).is_none());
        let twice = br#"{"m":{"a":1},"m":{"b":2}}"#;
        let c = Compact::parse(twice);
        assert!(c
            .as_ref()
            .is_some_and(|c| c.get("m").is_none() && c.get_in("m", "a").is_none()));
        let inner = br#"{"m":{"a":1,"a":2},"n":{"a\"b":1},"s":{"a": 1}}"#;
        let Some(c) = Compact::parse(inner) else {
            panic!("refused a valid compact top level");
        };
        assert_eq!(c.get_in("m", "a"), None); // twice
        assert_eq!(c.get_in("n", "x"), None); // an escaped key might spell it
        assert_eq!(c.get_in("s", "a"), None); // not compact inside
        assert_eq!(c.set_in(&[("s", "b", b"1")]), None);
    }

    #[test]
    fn other_layouts_further_in_keep_their_layout_and_mean_the_same_object() {
        // Members out of order (Go writes struct order), white space inside a value.
        let stored = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"uid":"u","name":"n"},"spec":{"a": [1, 2]}}"#;
        let Some(fast) = insert_member(stored, "metadata", "resourceVersion", "9") else {
            panic!("refused a valid object");
        };
        let fast: Value = serde_json::from_slice(&fast).unwrap_or_default();
        let parsed: Value = serde_json::from_slice(stored).unwrap_or_default();
        let expected: Value =
            serde_json::from_slice(&slow(&parsed, "resourceVersion", "9")).unwrap_or_default();
        assert_eq!(fast, expected);
        assert_eq!(fast.at("/metadata/resourceVersion"), Some(&json!("9")));
        // Deeper than the slow path parses.
        let deep = format!(
            r#"{{"metadata":{{}},"spec":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(
            insert_member(deep.as_bytes(), "metadata", "resourceVersion", "1"),
            None
        );
    }
}
