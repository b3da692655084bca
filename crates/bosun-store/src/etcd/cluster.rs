//! etcd `Cluster` service on Raft membership. Members added through the etcd API get an
//! id derived from their peer URL and are named after it; `bosun cluster add-member`
//! (the Admin service) names them properly.

use std::sync::Arc;

use bosun_api::etcd::cluster_server::Cluster;
use bosun_api::etcd::*;
use tonic::{Request, Response, Status};

use super::{authorize, header};
use crate::node::Node;
use crate::types::Member as RaftMember;

/// The Cluster service.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    /// For `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    fn list(&self) -> Vec<Member> {
        self.node
            .members()
            .into_iter()
            .map(|(id, m, learner)| Member {
                id,
                name: m.name,
                peer_ur_ls: vec![format!("https://{}", m.peer_addr)],
                client_ur_ls: vec![format!("https://{}", m.client_addr)],
                is_learner: learner,
            })
            .collect()
    }

    fn hdr(&self) -> Option<ResponseHeader> {
        header(&self.node, self.node.state().revision())
    }
}

fn strip(url: &str) -> &str {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        authorize(&req)?;
        let r = req.into_inner();
        let Some(url) = r.peer_ur_ls.first() else {
            return Err(Status::invalid_argument(
                "etcdserver: member peer URL is required",
            ));
        };
        let peer = strip(url).to_string();
        if peer.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "peer URL {url:?} is not https://ip:port"
            )));
        }
        let id = crate::node::fnv1a(peer.as_bytes()) >> 1;
        let member = RaftMember {
            name: format!("m-{id:x}"),
            peer_addr: peer.clone(),
            client_addr: String::new(),
        };
        // Non-blocking, as etcd's MemberAdd: it returns before the new member runs.
        self.node
            .add_member(id, member, !r.is_learner, false)
            .await?;
        let members = self.list();
        let member = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(MemberAddResponse {
            header: self.hdr(),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        authorize(&req)?;
        self.node.remove_member(req.into_inner().id).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.hdr(),
            members: self.list(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        authorize(&req)?;
        Err(Status::unimplemented(
            "member update is not supported: remove the member and add it again with its new address",
        ))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        authorize(&req)?;
        if req.get_ref().linearizable {
            self.node.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.hdr(),
            members: self.list(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        authorize(&req)?;
        self.node.promote_member(req.into_inner().id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.hdr(),
            members: self.list(),
        }))
    }
}
