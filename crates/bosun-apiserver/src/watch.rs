//! Watches of resources: the current objects (when no resource version is given), then every
//! change, from the local state machine, with selector transitions as Kubernetes reports
//! them (an object leaving the selection is DELETED, one entering it is ADDED).

pub mod memo;

use std::sync::Arc;

use bosun_api::kinds::KindInfo;
use bosun_api::resources::{WatchEvent, WatchRequest};
use bosun_api::selector::{FieldSelector, LabelSelector};
use bosun_store::command::{Event, EventKind, KeyValue};
use bosun_store::cursor::{Cursor, CursorError};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::{Error, Result};
use crate::service::{labels_of, Inner, BOOKMARK_INTERVAL};
use crate::store::set_resource_version;

type Tx = mpsc::Sender<std::result::Result<WatchEvent, Status>>;

/// Events buffered per watch before the stream applies back-pressure.
const WATCH_BUFFER: usize = 256;

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// No selector: every object of the resource is seen.
    fn everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Value) -> bool {
        self.everything() || (self.labels.matches(&labels_of(obj)) && self.fields.matches(obj))
    }
}

fn event(kind: &str, obj: &Value) -> WatchEvent {
    WatchEvent {
        r#type: kind.to_string(),
        object: serde_json::to_vec(obj).unwrap_or_default(),
        more: false,
    }
}

/// The event for a stored object seen whole (no selector to evaluate): its stored JSON
/// with the resource version put in, without parsing and writing it again; `None` for what
/// the scan cannot vouch for (an encrypted Secret, not valid JSON, laid out otherwise at
/// the top or in `metadata`: see [`bosun_api::json::insert_member`]), which the caller
/// decodes.
fn passed_through(kind: &str, kv: &KeyValue) -> Option<WatchEvent> {
    Some(WatchEvent {
        r#type: kind.to_string(),
        object: as_stored(kv)?,
        more: false,
    })
}

/// The object of [`passed_through`]: its stored JSON with the resource version put in
/// (lists without a selector send it too).
pub(crate) fn as_stored(kv: &KeyValue) -> Option<Vec<u8>> {
    let rv = kv.mod_revision.to_string();
    bosun_api::json::insert_member(&kv.value, "metadata", "resourceVersion", &rv)
}

fn bookmark(kind: &KindInfo, rev: i64) -> WatchEvent {
    event(
        "BOOKMARK",
        &json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {"resourceVersion": rev.to_string()}}),
    )
}

fn expired(requested: i64, compacted: i64) -> WatchEvent {
    event(
        "ERROR",
        &json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: {requested} ({compacted})"),
        }),
    )
}

/// Starts a watch; the receiver yields its events until the client goes away, the
/// resource version is compacted away (an ERROR event), or the server shuts down.
///
/// # Errors
/// Bad selectors or resource version; [`Error::Expired`] when it is already compacted.
pub async fn start(
    inner: Arc<Inner>,
    kind: &'static KindInfo,
    r: WatchRequest,
) -> Result<mpsc::Receiver<std::result::Result<WatchEvent, Status>>> {
    let filter = Filter {
        labels: r
            .label_selector
            .parse()
            .map_err(|e| Error::BadRequest(format!("{e}")))?,
        fields: r
            .field_selector
            .parse()
            .map_err(|e| Error::BadRequest(format!("{e}")))?,
    };
    let prefix = kind.prefix(if kind.namespaced { &r.namespace } else { "" });
    let store = inner.store().clone();
    let mut initial = Vec::new();
    let from = if r.resource_version.is_empty() || r.resource_version == "0" {
        store.barrier().await?;
        let (kvs, _, rev) = store.scan(&prefix, None, 0, 0)?;
        for kv in &kvs {
            if filter.everything() {
                if let Some(ev) = passed_through("ADDED", kv) {
                    initial.push(ev);
                    continue;
                }
            }
            match store.decode(kv) {
                Ok(s) if filter.matches(&s.object) => initial.push(event("ADDED", &s.object)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping an undecodable object"),
            }
        }
        rev
    } else {
        let rv: i64 = r.resource_version.parse().map_err(|_| {
            Error::BadRequest(format!(
                "resourceVersion {:?} is not a resource version",
                r.resource_version
            ))
        })?;
        let compacted = store.compact_revision();
        if rv < compacted {
            return Err(Error::Expired {
                requested: rv,
                compacted,
            });
        }
        rv
    };
    let cursor = store.cursor(&prefix, from + 1);
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let shutdown = inner.shutdown().clone();
    let task = Watch {
        inner: inner.clone(),
        kind,
        filter,
        tx,
        bookmarks: r.allow_bookmarks,
    };
    inner.tasks().spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = task.run(initial, from, cursor) => {}
        }
    });
    Ok(rx)
}

struct Watch {
    inner: Arc<Inner>,
    kind: &'static KindInfo,
    filter: Filter,
    tx: Tx,
    bookmarks: bool,
}

impl Watch {
    async fn send(&self, ev: WatchEvent) -> bool {
        self.tx.send(Ok(ev)).await.is_ok()
    }

    async fn run(self, initial: Vec<WatchEvent>, from: i64, mut cursor: Cursor) {
        for ev in initial {
            if !self.send(ev).await {
                return;
            }
        }
        if self.bookmarks && !self.send(bookmark(self.kind, from)).await {
            return;
        }
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        let mut idle = true;
        loop {
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tick.tick(), if self.bookmarks => {
                    if idle && !self.send(bookmark(self.kind, cursor.next_revision() - 1)).await {
                        return;
                    }
                    idle = true;
                }
                b = cursor.next() => match b {
                    Ok(batch) => {
                        // A batch holds whole revisions: an event is marked `more` when
                        // the next one sent has its revision.
                        let mut out: Vec<(i64, WatchEvent)> = batch
                            .events
                            .iter()
                            .filter_map(|e| self.translate(e).map(|ev| (e.kv.mod_revision, ev)))
                            .collect();
                        for i in 1..out.len() {
                            if out[i].0 == out[i - 1].0 {
                                out[i - 1].1.more = true;
                            }
                        }
                        for (_, ev) in out {
                            idle = false;
                            if !self.send(ev).await {
                                return;
                            }
                        }
                    }
                    Err(CursorError::Compacted { requested, compacted }) => {
                        let _ = self.send(expired(requested, compacted)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = self.tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                },
            }
        }
    }

    fn decode(&self, kv: &KeyValue) -> Option<Value> {
        match self.inner.store().decode(kv) {
            Ok(s) => Some(s.object),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an undecodable object in a watch");
                None
            }
        }
    }

    /// `kv` decoded, shared with the server's other watches.
    fn decoded(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        self.inner
            .watch_memo()
            .record(&kv.key, kv.mod_revision, kv.value.len())
            .decoded(|| self.decode(kv))
    }

    /// The Kubernetes event for one store change, if the watcher sees it.
    ///
    /// Without a selector, an update needs only the new object: the old one was seen
    /// whenever it existed, so it is not decoded (the informers of the scheduler, the
    /// controllers and the agents watch this way, and decoding is most of a watch's cost),
    /// and the new one is sent as stored, with its resource version put in. What is sent,
    /// and each object decoded, is made once for all the server's watches ([`memo`]).
    fn translate(&self, e: &Event) -> Option<WatchEvent> {
        let memo = self.inner.watch_memo();
        let everything = self.filter.everything();
        let seen = |kv: &KeyValue| self.decoded(kv).is_some_and(|o| self.filter.matches(&o));
        let (kind, object) = match e.kind {
            EventKind::Put => {
                let now = memo.record(&e.kv.key, e.kv.mod_revision, e.kv.value.len());
                let (before, after) = if everything {
                    (e.prev.is_some(), true)
                } else {
                    let obj = now.decoded(|| self.decode(&e.kv))?;
                    (e.prev.as_ref().is_some_and(seen), self.filter.matches(&obj))
                };
                let kind = match (before, after) {
                    (false, true) => "ADDED",
                    (true, true) => "MODIFIED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                };
                let object = now.sent(|| {
                    as_stored(&e.kv).or_else(|| {
                        let obj = now.decoded(|| self.decode(&e.kv))?;
                        serde_json::to_vec(&*obj).ok()
                    })
                })?;
                (kind, object)
            }
            EventKind::Delete => {
                let prev = e.prev.as_ref()?;
                if !everything && !seen(prev) {
                    return None;
                }
                // Negative: a deletion's record is not the record of a write at its
                // revision.
                let gone = memo.record(&e.kv.key, -e.kv.mod_revision, prev.value.len());
                let object = gone.sent(|| {
                    let mut obj = Value::clone(&*self.decoded(prev)?);
                    set_resource_version(&mut obj, e.kv.mod_revision);
                    serde_json::to_vec(&obj).ok()
                })?;
                ("DELETED", object)
            }
        };
        Some(WatchEvent {
            r#type: kind.to_string(),
            object: object.to_vec(),
            more: false,
        })
    }
}
