//! etcd `Lease` service. Keep-alives and TTL queries are answered by the leader, whose
//! clock alone decides expiry.

use std::pin::Pin;
use std::sync::Arc;

use bosun_api::etcd::lease_server::Lease;
use bosun_api::etcd::*;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{authorize, header};
use crate::command::{Command, Request as Cmd};
use crate::node::Node;

/// The Lease service.
pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        authorize(&req)?;
        let r = req.into_inner();
        let (id, ttl) = self.node.lease_grant(r.id, r.ttl).await?;
        Ok(Response::new(LeaseGrantResponse {
            header: header(&self.node, self.node.state().revision()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        authorize(&req)?;
        let id = req.into_inner().id;
        let (rev, _) = self
            .node
            .write(Cmd::new(Command::LeaseRevoke { id }))
            .await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: header(&self.node, rev),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        authorize(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = inbound.message() => m,
                };
                let Ok(Some(r)) = msg else { return };
                let resp = match node.lease_ttl(r.id, true).await {
                    // TTL 0 tells the client the lease is gone, as etcd does.
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: header(&node, node.state().revision()),
                        id: r.id,
                        ttl: ttl.unwrap_or(0),
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        authorize(&req)?;
        let r = req.into_inner();
        let remaining = self.node.lease_ttl(r.id, false).await?;
        let hdr = header(&self.node, self.node.state().revision());
        let resp = match (remaining, self.node.state().lease(r.id)) {
            (Some(ttl), Some((granted, keys))) => LeaseTimeToLiveResponse {
                header: hdr,
                id: r.id,
                ttl,
                granted_ttl: granted,
                keys: if r.keys { keys } else { vec![] },
            },
            // Not found: TTL -1, as etcd reports it.
            _ => LeaseTimeToLiveResponse {
                header: hdr,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        authorize(&req)?;
        let leases = self
            .node
            .state()
            .leases()
            .into_iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: header(&self.node, self.node.state().revision()),
            leases,
        }))
    }
}
