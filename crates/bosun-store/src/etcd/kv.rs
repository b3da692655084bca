//! etcd `KV` service.

use std::sync::Arc;

use bosun_api::etcd::kv_server::Kv;
use bosun_api::etcd::*;
use tonic::{Request, Response, Status};

use super::convert::{self, range_response, txn_response};
use super::{authorize, header};
use crate::command::{Command, CommandResult, Op, OpResult, Request as Cmd, TxnReq, TxnResult};
use crate::node::Node;
use crate::Error;

/// The KV service.
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }

    async fn run_txn(&self, txn: TxnReq) -> Result<(i64, TxnResult), Status> {
        match self.node.write(Cmd::new(Command::Txn(txn))).await? {
            (rev, CommandResult::Txn(t)) => Ok((rev, t)),
            (_, other) => Err(Error::Raft(format!("unexpected result {other:?}")).into()),
        }
    }

    async fn single(&self, op: Op) -> Result<(i64, OpResult), Status> {
        let (rev, mut t) = self
            .run_txn(TxnReq {
                compare: vec![],
                success: vec![op],
                failure: vec![],
            })
            .await?;
        let r = t
            .responses
            .pop()
            .ok_or_else(|| Status::internal("empty transaction result"))?;
        Ok((rev, r))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        authorize(&req)?;
        let req = req.into_inner();
        let serializable = req.serializable;
        let r = convert::range(req)?;
        if !serializable {
            self.node.read_barrier().await?;
        }
        let (res, rev) = self.node.state().range(&r).map_err(Error::from)?;
        Ok(Response::new(range_response(res, header(&self.node, rev))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        authorize(&req)?;
        let p = convert::put(req.into_inner(), self.node.config().max_value_bytes)?;
        match self.single(Op::Put(p)).await? {
            (rev, OpResult::Put { prev }) => Ok(Response::new(PutResponse {
                header: header(&self.node, rev),
                prev_kv: prev.map(Into::into),
            })),
            _ => Err(Status::internal("unexpected put result")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        authorize(&req)?;
        let d = convert::delete(req.into_inner())?;
        match self.single(Op::Delete(d)).await? {
            (rev, OpResult::Delete { deleted, prev }) => Ok(Response::new(DeleteRangeResponse {
                header: header(&self.node, rev),
                deleted,
                prev_kvs: prev.into_iter().map(Into::into).collect(),
            })),
            _ => Err(Status::internal("unexpected delete result")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        authorize(&req)?;
        let t = convert::txn(req.into_inner(), self.node.config().max_value_bytes)?;
        let (rev, res) = self.run_txn(t).await?;
        Ok(Response::new(txn_response(res, header(&self.node, rev))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        authorize(&req)?;
        let CompactionRequest {
            revision: rev,
            physical,
        } = req.into_inner();
        if rev <= 0 {
            return Err(Status::invalid_argument(
                "etcdserver: compaction revision must be positive",
            ));
        }
        let (r, _) = self.node.write(Cmd::new(Command::Compact(rev))).await?;
        if physical {
            // As etcd: a physical compaction answers once this member has applied it, so a
            // read or watch that follows on the same member no longer sees the old history.
            self.node.read_barrier().await?;
        }
        Ok(Response::new(CompactionResponse {
            header: header(&self.node, r),
        }))
    }
}
