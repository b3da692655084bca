//! etcd `Watch` service: one task per stream reading requests, one task per watcher.
//!
//! Each watcher reads its changes from a [`Cursor`] (history first, then live) and applies
//! etcd's filters and progress notifications on top.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bosun_api::etcd::watch_request::RequestUnion;
use bosun_api::etcd::watch_server::Watch;
use bosun_api::etcd::*;
use bosun_api::mvcc;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert::event;
use super::{authorize, header};
use crate::command::{Event, EventKind, KeyRange};
use crate::cursor::{Cursor, CursorError};
use crate::node::Node;

/// Events per response at most.
const MAX_EVENTS_PER_RESPONSE: usize = 500;
/// Interval of progress notifications for watchers that asked for them.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Watchers per stream at most.
const MAX_WATCHERS_PER_STREAM: usize = 4096;

/// The Watch service.
pub struct WatchService {
    node: Arc<Node>,
}

impl WatchService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        WatchService { node }
    }
}

type Tx = mpsc::Sender<Result<WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        authorize(&req)?;
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(serve_stream(self.node.clone(), inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_stream(node: Arc<Node>, mut inbound: Streaming<WatchRequest>, tx: Tx) {
    let stream_cancel = CancellationToken::new();
    // Per watcher: its cancel token and the revision it has delivered everything up to.
    let mut watchers: HashMap<i64, (CancellationToken, Arc<AtomicI64>)> = HashMap::new();
    let mut next_id: i64 = 0;
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => break,
            m = inbound.message() => m,
        };
        let req = match msg {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(error = %status, "watch stream ended");
                break;
            }
        };
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => {
                watchers.retain(|_, (t, _)| !t.is_cancelled());
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    while watchers.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                let refuse = if watchers.contains_key(&id) {
                    Some("etcdserver: duplicate watch ID".to_string())
                } else if watchers.len() >= MAX_WATCHERS_PER_STREAM {
                    Some(format!(
                        "too many watchers on one stream (limit {MAX_WATCHERS_PER_STREAM})"
                    ))
                } else if c.key.is_empty() {
                    Some("etcdserver: key is not provided".to_string())
                } else {
                    None
                };
                if let Some(reason) = refuse {
                    let resp = WatchResponse {
                        header: header(&node, node.state().revision()),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: reason,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                    continue;
                }
                let token = stream_cancel.child_token();
                let delivered = Arc::new(AtomicI64::new(0));
                watchers.insert(id, (token.clone(), delivered.clone()));
                tokio::spawn(run_watcher(
                    node.clone(),
                    id,
                    c,
                    tx.clone(),
                    token,
                    delivered,
                ));
            }
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some((t, _)) = watchers.remove(&c.watch_id) {
                    t.cancel();
                    let resp = WatchResponse {
                        header: header(&node, node.state().revision()),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Report only a revision every watcher of this stream has delivered: a
                // client may take it as "my view is complete up to here".
                watchers.retain(|_, (t, _)| !t.is_cancelled());
                let rev = watchers
                    .values()
                    .map(|(_, d)| d.load(Ordering::Acquire))
                    .min()
                    .unwrap_or_else(|| node.state().revision());
                let resp = WatchResponse {
                    header: header(&node, rev),
                    watch_id: -1,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
            None => {}
        }
    }
    stream_cancel.cancel();
}

struct Watcher {
    node: Arc<Node>,
    id: i64,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    tx: Tx,
    /// The next revision this watcher has not delivered.
    next: i64,
    /// `next - 1`, shared with the stream for progress requests.
    delivered: Arc<AtomicI64>,
}

enum Stop {
    Gone,
    Compacted,
}

impl Watcher {
    fn advance(&mut self, next: i64) {
        self.next = self.next.max(next);
        self.delivered.store(self.next - 1, Ordering::Release);
    }

    fn wanted(&self, e: &Event) -> bool {
        e.kv.mod_revision >= self.next
            && self.range.contains(&e.kv.key)
            && !(self.no_put && e.kind == EventKind::Put)
            && !(self.no_delete && e.kind == EventKind::Delete)
    }

    async fn send_events(&self, events: Vec<mvcc::Event>) -> Result<(), Stop> {
        for chunk in events.chunks(MAX_EVENTS_PER_RESPONSE) {
            let resp = WatchResponse {
                header: header(&self.node, self.node.state().revision()),
                watch_id: self.id,
                events: chunk.to_vec(),
                ..Default::default()
            };
            self.tx.send(Ok(resp)).await.map_err(|_| Stop::Gone)?;
        }
        Ok(())
    }

    async fn live(
        &mut self,
        mut cursor: Cursor,
        cancel: CancellationToken,
        progress: bool,
    ) -> Result<(), Stop> {
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.tick().await;
        let mut sent_since_tick = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Gone),
                _ = tick.tick(), if progress => {
                    if !sent_since_tick {
                        let resp = WatchResponse { header: header(&self.node, self.next - 1), watch_id: self.id, ..Default::default() };
                        self.tx.send(Ok(resp)).await.map_err(|_| Stop::Gone)?;
                    }
                    sent_since_tick = false;
                }
                b = cursor.next() => {
                    let batch = match b {
                        Ok(b) => b,
                        Err(CursorError::Compacted { .. }) => return Err(Stop::Compacted),
                        Err(CursorError::History(e)) => {
                            tracing::warn!(error = %e, "watch history read failed");
                            return Err(Stop::Compacted);
                        }
                        Err(_) => return Err(Stop::Gone),
                    };
                    let out: Vec<mvcc::Event> = batch.events.into_iter().filter(|e| self.wanted(e)).map(|e| event(e, self.prev_kv)).collect();
                    if !out.is_empty() {
                        sent_since_tick = true;
                        self.send_events(out).await?;
                    }
                    self.advance(batch.next);
                }
            }
        }
    }
}

async fn run_watcher(
    node: Arc<Node>,
    id: i64,
    c: WatchCreateRequest,
    tx: Tx,
    cancel: CancellationToken,
    delivered: Arc<AtomicI64>,
) {
    use watch_create_request::FilterType;
    let range = KeyRange {
        key: c.key.clone(),
        end: c.range_end.clone(),
    };
    let cursor = Cursor::new(node.state().clone(), range.clone(), c.start_revision);
    let current = if c.start_revision > 0 {
        node.state().revision()
    } else {
        cursor.next_revision() - 1
    };
    let mut w = Watcher {
        node: node.clone(),
        id,
        range,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: c.prev_kv,
        tx: tx.clone(),
        next: cursor.next_revision(),
        delivered,
    };
    w.delivered.store(w.next - 1, Ordering::Release);
    let created = WatchResponse {
        header: header(&node, current),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    if tx.send(Ok(created)).await.is_err() {
        return;
    }
    if let Err(Stop::Compacted) = w.live(cursor, cancel.clone(), c.progress_notify).await {
        let resp = WatchResponse {
            header: header(&node, node.state().revision()),
            watch_id: id,
            canceled: true,
            compact_revision: node.state().compact_revision(),
            cancel_reason: "mvcc: required revision has been compacted".into(),
            ..Default::default()
        };
        let _ = tx.send(Ok(resp)).await;
    }
    cancel.cancel();
}
