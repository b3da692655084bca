//! etcd `Maintenance` service: Status, Snapshot and (empty) Alarm.

use std::pin::Pin;
use std::sync::Arc;

use bosun_api::etcd::maintenance_server::Maintenance;
use bosun_api::etcd::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::{authorize, header};
use crate::node::Node;

/// The etcd API version bosun speaks (reported by Status).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Snapshot bytes per streamed message.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The Maintenance service.
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        authorize(&req)?;
        // bosun raises no alarms (it has no space quota alarm): the list is truly empty.
        Ok(Response::new(AlarmResponse {
            header: header(&self.node, self.node.state().revision()),
            alarms: vec![],
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        authorize(&req)?;
        let n = &self.node;
        let (leader, term, last_log, applied, learner) = {
            // Before borrowing the metrics: leader_id() borrows them too.
            let leader_id = n.leader_id().unwrap_or(0);
            let m = n.raft().metrics();
            let m = m.borrow();
            let learner = !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == n.config().id);
            (
                leader_id,
                m.current_term,
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
                learner,
            )
        };
        let db_size = crate::db::size_on_disk(&n.config().dir) as i64;
        Ok(Response::new(StatusResponse {
            header: header(n, n.state().revision()),
            version: ETCD_API_VERSION.into(),
            db_size,
            leader,
            raft_index: last_log,
            raft_term: term,
            raft_applied_index: applied,
            errors: vec![],
            db_size_in_use: db_size,
            is_learner: learner,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        authorize(&req)?;
        let node = self.node.clone();
        let bytes = tokio::task::spawn_blocking(move || node.state().snapshot_bytes())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("snapshot: {e}")))?;
        let hdr = header(&self.node, self.node.state().revision());
        let total = bytes.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, c)| {
                Ok(SnapshotResponse {
                    header: hdr,
                    remaining_bytes: (total - (i * SNAPSHOT_CHUNK + c.len())) as u64,
                    blob: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}
