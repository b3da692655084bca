//! What enters the Raft log ([`Request`]) and what applying it returns ([`Response`]).
//!
//! Every write is one of these commands; `apply` is deterministic: ids and times are decided
//! by the proposer (lease ids) or the leader (lease expiry), never by the state machine.

use serde::{Deserialize, Serialize};

/// Values as one byte string, not a sequence of `u8`: bincode writes both the same way
/// (length, then the bytes), but element by element a value near the 1.5 MiB limit costs
/// tens of milliseconds to encode or decode in a debug build, at every hop of a write.
pub(crate) mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// A key's record, as in etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the last creation of this key.
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after create).
    pub version: i64,
    /// The value.
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
    /// Attached lease, 0 for none.
    pub lease: i64,
}

/// Kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change at one revision. The previous record is always kept: watchers may ask for it,
/// and reads at a past revision undo changes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new record (for a delete: the key, with `mod_revision` the deleting revision).
    pub kv: KeyValue,
    /// The record before the change, if the key existed.
    pub prev: Option<KeyValue>,
}

/// Key range as in etcd: `end` empty means the single key; `end == [0]` means every key
/// from `key` on; otherwise `[key, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// First key.
    pub key: Vec<u8>,
    /// End (see type docs).
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Whether `k` falls in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            return k == self.key.as_slice();
        }
        if k < self.key.as_slice() {
            return false;
        }
        self.end == [0] || k < self.end.as_slice()
    }
    /// Whether this names a single key.
    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }
}

/// Sort order of a range read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order (no explicit sort).
    #[default]
    None,
    /// Ascending by the target.
    Ascend,
    /// Descending by the target.
    Descend,
}

/// What a range read sorts by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// A range read (etcd `RangeRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeReq {
    /// Keys to read.
    pub range: KeyRange,
    /// At most this many records, 0 for no limit.
    pub limit: i64,
    /// Read at this past revision, 0 for the current one.
    pub revision: i64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Leave values out.
    pub keys_only: bool,
    /// Only count.
    pub count_only: bool,
    /// Filters on revisions (0 = no filter).
    pub min_mod_revision: i64,
    /// See `min_mod_revision`.
    pub max_mod_revision: i64,
    /// See `min_mod_revision`.
    pub min_create_revision: i64,
    /// See `min_mod_revision`.
    pub max_create_revision: i64,
}

/// The result of a range read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    /// Records, in the requested order, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// Whether more matched than returned.
    pub more: bool,
    /// How many matched.
    pub count: i64,
}

/// A put (etcd `PutRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReq {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none.
    pub lease: i64,
    /// Return the previous record.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

/// A delete (etcd `DeleteRangeRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReq {
    /// Keys to delete.
    pub range: KeyRange,
    /// Return the deleted records.
    pub prev_kv: bool,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read.
    Range(RangeReq),
    /// Write one key.
    Put(PutReq),
    /// Delete a range.
    Delete(DeleteReq),
    /// Nested transaction.
    Txn(TxnReq),
}

/// Result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Of a range.
    Range(RangeResult),
    /// Of a put: the previous record when asked for.
    Put {
        /// Previous record.
        prev: Option<KeyValue>,
    },
    /// Of a delete.
    Delete {
        /// How many keys were deleted.
        deleted: i64,
        /// Deleted records when asked for.
        prev: Vec<KeyValue>,
    },
    /// Of a nested transaction.
    Txn(TxnResult),
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// ==
    Equal,
    /// >
    Greater,
    /// <
    Less,
    /// !=
    NotEqual,
}

/// What a comparison looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The version.
    Version(i64),
    /// The create revision.
    Create(i64),
    /// The mod revision.
    Mod(i64),
    /// The value.
    Value(#[serde(with = "bytes")] Vec<u8>),
    /// The lease.
    Lease(i64),
}

/// One comparison of a transaction guard; with a range, every key in it must satisfy it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// Keys compared.
    pub range: KeyRange,
    /// Operator.
    pub op: CompareOp,
    /// Target and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// Whether the comparison holds for one key's record (`None`: the key is absent; it
    /// then has revisions, version and lease 0, and no value, as in etcd).
    pub fn holds_for(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord: Option<Ordering> = match &self.target {
            CompareTarget::Version(v) => Some(kv.map_or(0, |k| k.version).cmp(v)),
            CompareTarget::Create(v) => Some(kv.map_or(0, |k| k.create_revision).cmp(v)),
            CompareTarget::Mod(v) => Some(kv.map_or(0, |k| k.mod_revision).cmp(v)),
            CompareTarget::Lease(v) => Some(kv.map_or(0, |k| k.lease).cmp(v)),
            // A value comparison on a missing key fails, as in etcd.
            CompareTarget::Value(v) => kv.map(|k| k.value.as_slice().cmp(v.as_slice())),
        };
        match (ord, self.op) {
            (None, _) => false,
            (Some(o), CompareOp::Equal) => o == Ordering::Equal,
            (Some(o), CompareOp::NotEqual) => o != Ordering::Equal,
            (Some(o), CompareOp::Greater) => o == Ordering::Greater,
            (Some(o), CompareOp::Less) => o == Ordering::Less,
        }
    }
}

/// A transaction: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReq {
    /// Guards.
    pub compare: Vec<Compare>,
    /// Ops run when all guards hold.
    pub success: Vec<Op>,
    /// Ops run otherwise.
    pub failure: Vec<Op>,
}

/// Result of a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether the guards held.
    pub succeeded: bool,
    /// One result per op of the branch taken.
    pub responses: Vec<OpResult>,
}

/// A command of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A transaction (plain puts and deletes are one-op transactions).
    Txn(TxnReq),
    /// Drop history before this revision.
    Compact(i64),
    /// Create a lease; the id is chosen by the proposer.
    LeaseGrant {
        /// Lease id (positive).
        id: i64,
        /// Time to live in seconds.
        ttl: i64,
    },
    /// Revoke a lease and delete its keys (also how the leader expires leases).
    LeaseRevoke {
        /// Lease id.
        id: i64,
    },
    // New variants go last: bincode encodes the variant index, and the log is durable.
    /// Independent requests of different clients folded into one log entry by the
    /// proposing server: applied in order, each with its own fence, result and revision.
    Batch(Vec<Request>),
}

/// A log entry's payload: a command, optionally fenced by the leader term it was decided
/// under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// When set, the command is refused unless its log entry was proposed in this term:
    /// a decision taken under one leadership never takes effect under another.
    pub fence_term: Option<u64>,
    /// The command.
    pub command: Command,
}

impl Request {
    /// An unfenced command.
    pub fn new(command: Command) -> Self {
        Request {
            fence_term: None,
            command,
        }
    }
    /// A command fenced by `term`.
    pub fn fenced(term: u64, command: Command) -> Self {
        Request {
            fence_term: Some(term),
            command,
        }
    }
}

/// Deterministic refusals of a command, decided while applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// The lease named by a put or revoke does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease with this id exists already.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The revision asked for was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for is in the future.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value`/`ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// The fenced command was proposed in another term than it was decided under.
    #[error("fenced: decided in term {decided} but proposed in term {proposed}")]
    Fenced {
        /// The term in the request.
        decided: u64,
        /// The term of the log entry.
        proposed: u64,
    },
    // New variants go last: bincode encodes the variant index.
    /// A batch inside a batch (never proposed by bosun).
    #[error("a batch may not contain a batch")]
    NestedBatch,
}

/// What applying an entry returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The store revision after the entry.
    pub revision: i64,
    /// The command's result; `None` for entries without a command (blank, membership).
    pub result: Option<Result<CommandResult, ApplyError>>,
}

/// Successful outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Of a transaction.
    Txn(TxnResult),
    /// Of a compaction.
    Compacted,
    /// Of a lease grant.
    LeaseGranted {
        /// Id.
        id: i64,
        /// TTL in seconds.
        ttl: i64,
    },
    /// Of a lease revoke.
    LeaseRevoked,
    // New variants go last: bincode encodes the variant index.
    /// Of a batch: per request, the revision after it and its outcome.
    Batch(Vec<(i64, Result<CommandResult, ApplyError>)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_compares_as_etcd_says() {
        let on = |op, target| Compare {
            range: KeyRange {
                key: b"/k".to_vec(),
                end: Vec::new(),
            },
            op,
            target,
        };
        let kv = KeyValue {
            key: b"/k".to_vec(),
            create_revision: 5,
            mod_revision: 9,
            version: 2,
            value: b"v".to_vec(),
            lease: 0,
        };
        let absent = on(CompareOp::Equal, CompareTarget::Create(0));
        assert!(absent.holds_for(None));
        assert!(!absent.holds_for(Some(&kv)));
        let unchanged = on(CompareOp::Equal, CompareTarget::Mod(9));
        assert!(unchanged.holds_for(Some(&kv)));
        assert!(!unchanged.holds_for(None));
        assert!(on(CompareOp::Greater, CompareTarget::Version(1)).holds_for(Some(&kv)));
        assert!(on(CompareOp::Less, CompareTarget::Mod(10)).holds_for(Some(&kv)));
        // A value comparison on a missing key fails, whatever the operator.
        let value = on(CompareOp::NotEqual, CompareTarget::Value(b"x".to_vec()));
        assert!(value.holds_for(Some(&kv)));
        assert!(!value.holds_for(None));
    }

    #[test]
    fn values_encode_as_they_did_as_sequences_of_u8() {
        // What the log and snapshots already hold: the plain derive over `Vec<u8>`.
        #[derive(Serialize)]
        struct Before {
            key: Vec<u8>,
            create_revision: i64,
            mod_revision: i64,
            version: i64,
            value: Vec<u8>,
            lease: i64,
        }
        let value: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let before = Before {
            key: b"/k".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            value: value.clone(),
            lease: 7,
        };
        let now = KeyValue {
            key: b"/k".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            value,
            lease: 7,
        };
        let old = bincode::serialize(&before).unwrap();
        assert_eq!(bincode::serialize(&now).unwrap(), old);
        assert_eq!(bincode::deserialize::<KeyValue>(&old).unwrap(), now);
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<KeyValue>(&json).unwrap(), now);
    }
}
