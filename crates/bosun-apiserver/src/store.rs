//! The API server's view of the replicated store: objects as JSON under string keys, read
//! from the local state machine, written as transactions (forwarded to the leader by the
//! store), Secrets encrypted on the way in and decrypted on the way out.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use bosun_store::command::{
    Command, Compare, CompareOp, CompareTarget, DeleteReq, KeyRange, KeyValue, Op, OpResult,
    PutReq, RangeReq, Request, TxnReq, TxnResult,
};
use bosun_store::cursor::Cursor;
use bosun_store::Node;
use rand::RngCore;
use serde_json::Value;

use crate::error::{Error, Result};

/// Prefix of an encrypted value: `k8s:enc:aesgcm:v1:<key id>:` then nonce and ciphertext.
const ENC_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;

/// AES-256-GCM keys for Secrets at rest: the first encrypts, all decrypt (rotation).
#[derive(Clone, Default)]
pub struct SecretKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretKeys").field("ids", &ids).finish()
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Unreadable.
    #[error("reading secrets key file {path}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `<id> <base64 of 32 bytes>`.
    #[error("secrets key file {path} line {line}: {reason}")]
    Malformed {
        /// Path.
        path: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
}

impl SecretKeys {
    /// Reads `<id> <base64 key>` lines; the first is the one that encrypts. An empty file
    /// (or no file configured) means Secrets are stored in plain JSON.
    ///
    /// # Errors
    /// When the file cannot be read or a line is malformed.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| KeyFileError::Malformed {
                path: path.display().to_string(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let (id, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<id> <base64 key>`"))?;
            if id.is_empty() || id.contains(':') {
                return Err(bad("the key id must be non-empty and contain no ':'"));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| bad("the key is not base64"))?;
            if raw.len() != 32 {
                return Err(bad("the key must be 32 bytes (AES-256)"));
            }
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw));
            keys.push((id.to_string(), cipher));
        }
        Ok(SecretKeys { keys })
    }

    /// A new random key line (`<id> <base64>`), for `bosun pki init`.
    pub fn generate_line(id: &str) -> String {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        format!(
            "{id} {}\n",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Whether Secrets are encrypted.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The id of the key that encrypts.
    pub fn primary_id(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, cipher) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), plain).ok()?;
        let mut out =
            Vec::with_capacity(ENC_PREFIX.len() + id.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(ENC_PREFIX);
        out.extend_from_slice(id.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>> {
        let corrupt = |reason: String| Error::Corrupt {
            key: key.to_string(),
            reason,
        };
        let rest = &stored[ENC_PREFIX.len()..];
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| corrupt("encrypted value without a key id".into()))?;
        let id = String::from_utf8_lossy(&rest[..colon]).to_string();
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(corrupt("encrypted value is truncated".into()));
        }
        let (_, cipher) = self.keys.iter().find(|(k, _)| *k == id).ok_or_else(|| {
            corrupt(format!(
                "encrypted with key {id:?}, which is not in the secrets key file"
            ))
        })?;
        cipher
            .decrypt(Nonce::from_slice(&body[..NONCE_LEN]), &body[NONCE_LEN..])
            .map_err(|_| corrupt(format!("decryption with key {id:?} failed")))
    }
}

tokio::task_local! {
    /// The leader term the writes of the current request were decided under, if the
    /// caller (the leader's scheduler and controllers) fenced them.
    static FENCE: u64;
}

/// Runs `f` with its store writes fenced by `term`: the store refuses them when they are
/// committed in another term, so a deposed leader's decisions never take effect.
pub async fn fenced<F: std::future::Future>(term: Option<u64>, f: F) -> F::Output {
    match term {
        Some(t) => FENCE.scope(t, f).await,
        None => f.await,
    }
}

/// An object as read from the store.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object, with `metadata.resourceVersion` set to its mod revision.
    pub object: Value,
    /// The key's mod revision (the object's resourceVersion).
    pub mod_revision: i64,
    /// A Secret stored unencrypted or with a key other than the current primary: an
    /// update rewrites it even when nothing else changed (key rotation).
    pub stale_encryption: bool,
}

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A transaction guard: `key` does not exist.
pub fn absent(key: &str) -> Compare {
    Compare {
        range: single(key),
        op: CompareOp::Equal,
        target: CompareTarget::Create(0),
    }
}

/// A transaction guard: `key` exists.
pub fn present(key: &str) -> Compare {
    Compare {
        range: single(key),
        op: CompareOp::Greater,
        target: CompareTarget::Create(0),
    }
}

/// A transaction guard: `key` was last modified at `rev`.
pub fn unchanged_since(key: &str, rev: i64) -> Compare {
    Compare {
        range: single(key),
        op: CompareOp::Equal,
        target: CompareTarget::Mod(rev),
    }
}

fn single(key: &str) -> KeyRange {
    KeyRange {
        key: key.as_bytes().to_vec(),
        end: Vec::new(),
    }
}

/// A put of raw bytes.
pub fn put_raw(key: &str, value: Vec<u8>) -> Op {
    Op::Put(PutReq {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    })
}

/// A delete of one key.
pub fn delete(key: &str) -> Op {
    Op::Delete(DeleteReq {
        range: single(key),
        prev_kv: false,
    })
}

/// A delete of every key under `prefix`.
pub fn delete_prefix(prefix: &str) -> Op {
    Op::Delete(DeleteReq {
        range: KeyRange {
            key: prefix.as_bytes().to_vec(),
            end: prefix_end(prefix.as_bytes()),
        },
        prev_kv: false,
    })
}

/// A read of one key (in a transaction's failure branch, to say why it failed).
pub fn read(key: &str) -> Op {
    Op::Range(RangeReq {
        range: single(key),
        ..Default::default()
    })
}

/// The store, as the API server uses it.
#[derive(Clone)]
pub struct Store {
    node: Arc<Node>,
    secrets: Arc<SecretKeys>,
}

impl Store {
    /// Over `node`, encrypting Secrets with `secrets`.
    pub fn new(node: Arc<Node>, secrets: SecretKeys) -> Self {
        Store {
            node,
            secrets: Arc::new(secrets),
        }
    }

    /// The store node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Waits until this server has applied everything committed before the call, so the
    /// reads that follow are linearizable.
    ///
    /// # Errors
    /// When no leader confirms in time.
    pub async fn barrier(&self) -> Result<()> {
        Ok(self.node.read_barrier().await?)
    }

    /// The current revision of the local state machine.
    pub fn revision(&self) -> i64 {
        self.node.state().revision()
    }

    /// The compact revision.
    pub fn compact_revision(&self) -> i64 {
        self.node.state().compact_revision()
    }

    /// Encodes an object for storage (Secrets encrypted when keys are configured).
    ///
    /// # Errors
    /// Never in practice: JSON values always serialize.
    pub fn encode(&self, key: &str, obj: &Value) -> Result<Vec<u8>> {
        let plain = serde_json::to_vec(&AsStored(obj)).map_err(|e| Error::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        if is_secret_key(key) && self.secrets.enabled() {
            return self.secrets.encrypt(&plain).ok_or_else(|| Error::Corrupt {
                key: key.to_string(),
                reason: "encryption failed".into(),
            });
        }
        Ok(plain)
    }

    /// Decodes a stored record into an object with its resource version.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the bytes are not an object bosun wrote.
    pub fn decode(&self, kv: &KeyValue) -> Result<Stored> {
        let key = String::from_utf8_lossy(&kv.key).to_string();
        let plain = self.plain(&key, &kv.value)?;
        let mut object: Value =
            bosun_api::json::from_bytes(&plain).map_err(|e| Error::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        set_resource_version(&mut object, kv.mod_revision);
        let stale_encryption = is_secret_key(&key)
            && self.secrets.primary_id().is_some_and(|id| {
                let mut current = ENC_PREFIX.to_vec();
                current.extend_from_slice(id.as_bytes());
                current.push(b':');
                !kv.value.starts_with(&current)
            });
        Ok(Stored {
            object,
            mod_revision: kv.mod_revision,
            stale_encryption,
        })
    }

    /// Reads one object from the local state machine.
    ///
    /// # Errors
    /// When the store cannot be read or the record cannot be decoded.
    pub fn get(&self, key: &str) -> Result<Option<Stored>> {
        self.record(key)?.map(|kv| self.decode(&kv)).transpose()
    }

    /// One object's stored JSON (decrypted) and its mod revision, from the local state
    /// machine, not decoded: for a writer that edits a few members of it in place
    /// ([`bosun_api::json::Compact`]). Stored JSON has no `metadata.resourceVersion`.
    ///
    /// # Errors
    /// When the store cannot be read or the record cannot be decrypted.
    pub fn get_json(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let Some(kv) = self.record(key)? else {
            return Ok(None);
        };
        let plain = match self.plain(key, &kv.value)? {
            Cow::Borrowed(_) => kv.value,
            Cow::Owned(decrypted) => decrypted,
        };
        Ok(Some((plain, kv.mod_revision)))
    }

    fn record(&self, key: &str) -> Result<Option<KeyValue>> {
        let (res, _) = self
            .node
            .state()
            .range(&RangeReq {
                range: single(key),
                ..Default::default()
            })
            .map_err(bosun_store::Error::from)?;
        Ok(res.kvs.into_iter().next())
    }

    /// A record's value as JSON: decrypted when it was stored encrypted.
    fn plain<'v>(&self, key: &str, value: &'v [u8]) -> Result<Cow<'v, [u8]>> {
        if value.starts_with(ENC_PREFIX) {
            Ok(Cow::Owned(self.secrets.decrypt(key, value)?))
        } else {
            Ok(Cow::Borrowed(value))
        }
    }

    /// Whether `key` holds a value now (locally). For keys whose values are not objects,
    /// such as allocation records, which [`Store::get`] would refuse as corrupt.
    ///
    /// # Errors
    /// When the state machine cannot be read.
    pub fn exists(&self, key: &str) -> Result<bool> {
        let (res, _) = self
            .node
            .state()
            .range(&RangeReq {
                range: single(key),
                count_only: true,
                ..Default::default()
            })
            .map_err(bosun_store::Error::from)?;
        Ok(res.count > 0)
    }

    /// Raw records under `prefix`, in key order, after `start_after` (exclusive), at
    /// `revision` (0: current), at most `limit` (0: all). Returns the records, whether more
    /// remain, and the revision read at.
    ///
    /// # Errors
    /// [`Error::Expired`] when `revision` was compacted away.
    pub fn scan(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<(Vec<KeyValue>, bool, i64)> {
        let start = match start_after {
            Some(k) => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            None => prefix.as_bytes().to_vec(),
        };
        let req = RangeReq {
            range: KeyRange {
                key: start,
                end: prefix_end(prefix.as_bytes()),
            },
            limit,
            revision,
            ..Default::default()
        };
        match self.node.state().range(&req) {
            Ok((res, rev)) => Ok((res.kvs, res.more, if revision > 0 { revision } else { rev })),
            Err(bosun_store::mvcc::ReadError::Refused(
                bosun_store::command::ApplyError::Compacted,
            )) => Err(Error::Expired {
                requested: revision,
                compacted: self.compact_revision(),
            }),
            Err(e) => Err(bosun_store::Error::from(e).into()),
        }
    }

    /// Runs a transaction through the leader. Returns the revision after it and its result.
    ///
    /// # Errors
    /// When the store refuses it or no leader is available.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<Op>,
        failure: Vec<Op>,
    ) -> Result<(i64, TxnResult)> {
        let cmd = Command::Txn(TxnReq {
            compare,
            success,
            failure,
        });
        let req = match FENCE.try_with(|t| *t) {
            Ok(term) => Request::fenced(term, cmd),
            Err(_) => Request::new(cmd),
        };
        match self.node.write(req).await? {
            (rev, bosun_store::command::CommandResult::Txn(t)) => Ok((rev, t)),
            (_, other) => Err(Error::Store(bosun_store::Error::Raft(format!(
                "unexpected result of a transaction: {other:?}"
            )))),
        }
    }

    /// A cursor over every change under `prefix` from revision `start` on.
    pub fn cursor(&self, prefix: &str, start: i64) -> Cursor {
        Cursor::new(
            self.node.state().clone(),
            KeyRange {
                key: prefix.as_bytes().to_vec(),
                end: prefix_end(prefix.as_bytes()),
            },
            start,
        )
    }
}

/// The records a failed transaction's `read` ops returned, in order.
pub fn reads(t: &TxnResult) -> Vec<Option<KeyValue>> {
    t.responses
        .iter()
        .filter_map(|r| match r {
            OpResult::Range(r) => Some(r.kvs.first().cloned()),
            _ => None,
        })
        .collect()
}

fn is_secret_key(key: &str) -> bool {
    key.starts_with("/registry/secrets/")
}

/// An object as it is stored: without `metadata.resourceVersion` (the key's mod revision,
/// never stored). Written member by member, so that storing needs no copy of the object.
struct AsStored<'a>(&'a Value);

impl serde::Serialize for AsStored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.0 else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    out.serialize_entry(k, &WithoutResourceVersion(meta))?
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        out.end()
    }
}

/// Metadata without its resource version.
struct WithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| *k != "resourceVersion") {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_stored_without_its_resource_version_and_otherwise_unchanged() {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "data": {"metadata": {"resourceVersion": "kept: not the object's metadata"}},
            "metadata": {"name": "c", "namespace": "d", "resourceVersion": "42", "uid": "u"}});
        let mut expected = obj.clone();
        if let Some(m) = expected.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let stored = serde_json::to_vec(&AsStored(&obj)).unwrap_or_default();
        assert_eq!(stored, serde_json::to_vec(&expected).unwrap_or_default());
        for odd in [serde_json::json!([1]), serde_json::json!({"metadata": "x"})] {
            let stored = serde_json::to_vec(&AsStored(&odd)).unwrap_or_default();
            assert_eq!(stored, serde_json::to_vec(&odd).unwrap_or_default());
        }
    }

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn secrets_round_trip_and_rotate() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys");
        std::fs::write(&path, SecretKeys::generate_line("k1")).unwrap_or_else(|e| panic!("{e}"));
        let old = SecretKeys::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let sealed = old
            .encrypt(b"{\"data\":1}")
            .unwrap_or_else(|| panic!("encrypt"));
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(8).any(|w| w == b"\"data\":1"));
        // A new primary key is added in front: old values still decrypt.
        let both = SecretKeys::generate_line("k2") + &SecretKeys::generate_line("k1");
        std::fs::write(&path, both).unwrap_or_else(|e| panic!("{e}"));
        // Same k1 id but a new random key: decryption must fail loudly, not return garbage.
        let rotated = SecretKeys::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rotated.primary_id(), Some("k2"));
        assert!(matches!(
            rotated.decrypt("/registry/secrets/a/b", &sealed),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(
            old.decrypt("/registry/secrets/a/b", &sealed)
                .unwrap_or_default(),
            b"{\"data\":1}".to_vec()
        );
    }

    #[test]
    fn malformed_key_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys");
        std::fs::write(&path, "k1 bm90LWEta2V5\n").unwrap_or_else(|e| panic!("{e}"));
        let err = SecretKeys::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("line 1") && err.contains("32 bytes"), "{err}");
    }
}
