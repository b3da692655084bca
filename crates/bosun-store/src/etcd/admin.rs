//! bosun's Admin service: cluster status and membership by name (`bosun cluster …`).

use std::sync::Arc;

use bosun_api::admin::admin_server::Admin;
use bosun_api::admin::*;
use tonic::{Request, Response, Status};

use super::authorize;
use crate::node::Node;
use crate::types::Member;

/// The Admin service.
pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }

    fn members(&self) -> Vec<MemberStatus> {
        let replication = self.node.raft().metrics().borrow().replication.clone();
        self.node
            .members()
            .into_iter()
            .map(|(id, m, learner)| {
                let matched = replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten());
                MemberStatus {
                    id,
                    name: m.name,
                    peer_addr: m.peer_addr,
                    client_addr: m.client_addr,
                    learner,
                    matched_index: matched.map_or(0, |l| l.index),
                    has_matched: matched.is_some(),
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        authorize(&req)?;
        let n = &self.node;
        let commit = n.committed_index().await.unwrap_or(0);
        let leader_id = n.leader_id();
        let (leader, term, last_log, applied, state, snap, purged) = {
            let m = n.raft().metrics();
            let m = m.borrow();
            (
                leader_id,
                m.current_term,
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
                format!("{:?}", m.state),
                m.snapshot.map_or(0, |l| l.index),
                m.purged.map_or(0, |l| l.index),
            )
        };
        Ok(Response::new(StatusResponse {
            id: n.config().id,
            name: n.config().member.name.clone(),
            leader_id: leader.unwrap_or(0),
            has_leader: leader.is_some(),
            term,
            last_log_index: last_log,
            commit_index: commit,
            applied_index: applied,
            revision: n.state().revision(),
            compact_revision: n.state().compact_revision(),
            state,
            members: self.members(),
            snapshot_index: snap,
            purged_index: purged,
        }))
    }

    async fn add_member(
        &self,
        req: Request<AddMemberRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        authorize(&req)?;
        let r = req.into_inner();
        if r.name.is_empty() || r.id == 0 {
            return Err(Status::invalid_argument(
                "add-member needs a name and a non-zero id",
            ));
        }
        for (what, a) in [("peer", &r.peer_addr), ("client", &r.client_addr)] {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(Status::invalid_argument(format!(
                    "{what} address {a:?} is not ip:port"
                )));
            }
        }
        let member = Member {
            name: r.name,
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
        };
        self.node.add_member(r.id, member, r.promote, true).await?;
        Ok(Response::new(MembersResponse {
            members: self.members(),
        }))
    }

    async fn remove_member(
        &self,
        req: Request<RemoveMemberRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        authorize(&req)?;
        let r = req.into_inner();
        let id = if r.id != 0 {
            r.id
        } else {
            self.node
                .members()
                .into_iter()
                .find(|(_, m, _)| m.name == r.name)
                .map(|(id, _, _)| id)
                .ok_or_else(|| Status::not_found(format!("no member named {:?}", r.name)))?
        };
        self.node.remove_member(id).await?;
        Ok(Response::new(MembersResponse {
            members: self.members(),
        }))
    }
}
