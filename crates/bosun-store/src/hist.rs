//! How history events are stored: one record per event in the `hist` column family.
//!
//! An event carries the key's previous record, which watchers may ask for and reads at a
//! past revision undo changes with. Most updates change a small part of a value (a pod's
//! binding adds its node name; a status report replaces the status at the end of the
//! object), so an update stores the previous value as the bytes in which it differs from
//! the new one: the lengths of their common prefix and suffix, and the previous value's
//! bytes between them. That halves what the history writes, flushes and compacts for
//! typical objects.
//!
//! The first records written (before this encoding) are bincode of an [`Event`]: a `u32`
//! kind (0 put, 1 delete), the record, the optional previous record. [`Record`]'s first two
//! variants have that layout, so those records still read; updates with a delta are
//! variant 2, which a binary older than this one cannot read.

use serde::{Deserialize, Serialize};

use crate::command::{Event, EventKind, KeyValue};

/// A history record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// A put, with the whole previous record (if the key existed).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete (the key, and `mod_revision` the deleting revision), with the deleted
    /// record.
    Delete {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A put of an existing key, its previous value stored as a delta against the new one.
    Update { kv: KeyValue, prev: PrevDelta },
}

/// The previous record of an update: its fields, and its value as the new value's first
/// `prefix` bytes, then `middle`, then the new value's last `suffix` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrevDelta {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
    prefix: u32,
    suffix: u32,
    #[serde(with = "crate::command::bytes")]
    middle: Vec<u8>,
}

/// A record as written: [`Record`]'s layout, borrowing the event's records instead of
/// copying them (every server writes one per event it applies).
#[derive(Serialize)]
enum View<'a> {
    Put {
        kv: &'a KeyValue,
        prev: Option<&'a KeyValue>,
    },
    Delete {
        kv: &'a KeyValue,
        prev: Option<&'a KeyValue>,
    },
    Update {
        kv: &'a KeyValue,
        prev: DeltaView<'a>,
    },
}

/// [`PrevDelta`]'s layout, borrowing the middle bytes.
#[derive(Serialize)]
struct DeltaView<'a> {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
    prefix: u32,
    suffix: u32,
    middle: Raw<'a>,
}

/// Bytes written as one byte string, as `crate::command::bytes` writes a `Vec<u8>`.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// What a delta costs beyond its middle bytes (revisions, lease, the two lengths and the
/// middle's length), against a whole previous record's key and value lengths.
const DELTA_OVERHEAD: usize = 8 * 4 + 4 * 2 + 8;

/// How many bytes `a` and `b` share at their start: compared a block at a time (a
/// `memcmp`), then byte by byte within the first block that differs.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes `a` and `b` share at their end, at most `room`.
fn common_suffix(a: &[u8], b: &[u8], room: usize) -> usize {
    const BLOCK: usize = 32;
    let (a, b) = (&a[a.len() - room..], &b[b.len() - room..]);
    let mut i = 0;
    while i + BLOCK <= room && a[room - i - BLOCK..room - i] == b[room - i - BLOCK..room - i] {
        i += BLOCK;
    }
    i + a[..room - i]
        .iter()
        .rev()
        .zip(b[..room - i].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The lengths of the prefix and suffix `new` and `old` share, not overlapping in
/// either.
fn delta(new: &[u8], old: &[u8]) -> (usize, usize) {
    let prefix = common_prefix(new, old);
    let room = new.len().min(old.len()) - prefix;
    (prefix, common_suffix(new, old, room))
}

/// The record to store for `ev`.
fn view(ev: &Event) -> View<'_> {
    let kv = &ev.kv;
    match (ev.kind, &ev.prev) {
        (EventKind::Delete, prev) => View::Delete {
            kv,
            prev: prev.as_ref(),
        },
        (EventKind::Put, Some(p)) if p.key == kv.key => {
            let (prefix, suffix) = delta(&kv.value, &p.value);
            let middle = &p.value[prefix..p.value.len() - suffix];
            match (u32::try_from(prefix), u32::try_from(suffix)) {
                (Ok(prefix), Ok(suffix))
                    if middle.len() + DELTA_OVERHEAD < p.value.len() + p.key.len() =>
                {
                    View::Update {
                        kv,
                        prev: DeltaView {
                            create_revision: p.create_revision,
                            mod_revision: p.mod_revision,
                            version: p.version,
                            lease: p.lease,
                            prefix,
                            suffix,
                            middle: Raw(middle),
                        },
                    }
                }
                // Nothing much shared: the whole previous record, as before.
                _ => View::Put { kv, prev: Some(p) },
            }
        }
        (EventKind::Put, prev) => View::Put {
            kv,
            prev: prev.as_ref(),
        },
    }
}

/// Encodes `ev` as stored.
///
/// # Errors
/// When bincode fails (it does not for these types).
pub(crate) fn encode(ev: &Event) -> std::io::Result<Vec<u8>> {
    bincode::serialize(&view(ev)).map_err(std::io::Error::other)
}

/// The record stored for `ev`, as read back.
#[cfg(test)]
pub(crate) fn record(ev: &Event) -> Record {
    encode(ev)
        .and_then(|raw| bincode::deserialize(&raw).map_err(std::io::Error::other))
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Record {
    /// The event this record stores.
    ///
    /// # Errors
    /// When a delta does not fit the new value (a corrupt record).
    pub(crate) fn event(self) -> std::io::Result<Event> {
        Ok(match self {
            Record::Put { kv, prev } => Event {
                kind: EventKind::Put,
                kv,
                prev,
            },
            Record::Delete { kv, prev } => Event {
                kind: EventKind::Delete,
                kv,
                prev,
            },
            Record::Update { kv, prev } => {
                let (prefix, suffix) = (prev.prefix as usize, prev.suffix as usize);
                if prefix + suffix > kv.value.len() {
                    return Err(std::io::Error::other(format!(
                        "history record of revision {}: a delta of {prefix} + {suffix} bytes against a value of {}",
                        kv.mod_revision,
                        kv.value.len()
                    )));
                }
                let mut value = Vec::with_capacity(prefix + prev.middle.len() + suffix);
                value.extend_from_slice(&kv.value[..prefix]);
                value.extend_from_slice(&prev.middle);
                value.extend_from_slice(&kv.value[kv.value.len() - suffix..]);
                let prev = KeyValue {
                    key: kv.key.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: prev.mod_revision,
                    version: prev.version,
                    value,
                    lease: prev.lease,
                };
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev: Some(prev),
                }
            }
        })
    }
}

/// Decodes a stored record (either encoding) into its event.
///
/// # Errors
/// When the bytes are not a record.
pub(crate) fn decode(raw: &[u8]) -> std::io::Result<Event> {
    bincode::deserialize::<Record>(raw)
        .map_err(std::io::Error::other)?
        .event()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
            value: value.to_vec(),
            lease: 7,
        }
    }

    fn put(value: &[u8], prev: Option<&[u8]>) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kv("/registry/pods/ns/p", 9, value),
            prev: prev.map(|p| kv("/registry/pods/ns/p", 8, p)),
        }
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let pod = br#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Pending"}}"#;
        let bound = br#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}],"nodeName":"n-1"},"status":{"phase":"Pending"}}"#;
        let running = br#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}],"nodeName":"n-1"},"status":{"phase":"Running","podIP":"10.0.0.1"}}"#;
        let long = vec![b'x'; 300];
        let mut longer = long.clone();
        longer.insert(150, b'y');
        let cases: Vec<Event> = vec![
            put(pod, None),
            put(bound, Some(pod)),
            put(running, Some(bound)),
            put(pod, Some(running)),
            put(pod, Some(pod)),
            put(b"", Some(pod)),
            put(pod, Some(b"")),
            put(b"aaaa", Some(b"aa")),
            put(b"aa", Some(b"aaaa")),
            put(&longer, Some(&long)),
            put(&long, Some(&longer)),
            Event {
                kind: EventKind::Delete,
                kv: kv("/registry/pods/ns/p", 10, b""),
                prev: Some(kv("/registry/pods/ns/p", 9, running)),
            },
        ];
        for ev in cases {
            let raw = encode(&ev).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(decode(&raw).unwrap_or_else(|e| panic!("{e}")), ev);
        }
    }

    #[test]
    fn an_update_stores_only_what_changed_of_the_previous_value() {
        let long = vec![b'x'; 1000];
        let mut changed = long.clone();
        changed[500] = b'y';
        let ev = put(&changed, Some(&long));
        assert!(matches!(record(&ev), Record::Update { ref prev, .. } if prev.middle == b"x"));
        let whole = bincode::serialize(&ev).unwrap_or_default().len();
        let stored = encode(&ev).unwrap_or_default().len();
        assert!(stored < whole / 2 + 100, "{stored} of {whole}");
        // Nothing shared: the whole previous record, as before.
        let ev = put(b"abc", Some(b"xyz"));
        assert!(matches!(record(&ev), Record::Put { .. }));
    }

    #[test]
    fn the_shared_prefix_and_suffix_are_found_across_block_boundaries() {
        let naive = |new: &[u8], old: &[u8]| {
            let p = new.iter().zip(old).take_while(|(a, b)| a == b).count();
            let room = new.len().min(old.len()) - p;
            let s = new
                .iter()
                .rev()
                .zip(old.iter().rev())
                .take(room)
                .take_while(|(a, b)| a == b)
                .count();
            (p, s)
        };
        let base: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 100, 200] {
            let old = &base[..len];
            for at in 0..len {
                let mut new = old.to_vec();
                new[at] ^= 0xff;
                assert_eq!(
                    delta(&new, old),
                    naive(&new, old),
                    "len {len}, change at {at}"
                );
                new.insert(at, b'!');
                assert_eq!(
                    delta(&new, old),
                    naive(&new, old),
                    "len {len}, insert at {at}"
                );
            }
            assert_eq!(delta(old, old), naive(old, old), "len {len}, equal");
            let doubled = [old, old].concat();
            assert_eq!(
                delta(&doubled, old),
                naive(&doubled, old),
                "len {len}, doubled"
            );
        }
    }

    #[test]
    fn records_written_before_deltas_still_read() {
        // The old encoding was bincode of the event itself.
        let ev = put(b"new", Some(b"old"));
        let old = bincode::serialize(&ev).unwrap_or_default();
        assert_eq!(decode(&old).unwrap_or_else(|e| panic!("{e}")), ev);
        let del = Event {
            kind: EventKind::Delete,
            kv: kv("/k", 3, b""),
            prev: None,
        };
        let old = bincode::serialize(&del).unwrap_or_default();
        assert_eq!(decode(&old).unwrap_or_else(|e| panic!("{e}")), del);
    }

    #[test]
    fn a_corrupt_delta_is_an_error_not_a_panic() {
        let rec = Record::Update {
            kv: kv("/k", 3, b"abc"),
            prev: PrevDelta {
                create_revision: 1,
                mod_revision: 2,
                version: 1,
                lease: 0,
                prefix: 2,
                suffix: 2,
                middle: Vec::new(),
            },
        };
        let raw = bincode::serialize(&rec).unwrap_or_default();
        let err = decode(&raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("delta of 2 + 2 bytes"), "{err}");
        assert!(decode(&raw[..raw.len() / 2]).is_err());
    }
}
