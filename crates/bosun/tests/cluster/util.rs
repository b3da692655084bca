//! Fixtures shared by the cluster tests.

use std::path::Path;
use std::time::Duration;

use bosun_api::etcd::kv_client::KvClient;
use bosun_api::etcd::{PutRequest, RangeRequest};
pub use bosun_testkit::{eventually, Cluster};
use tonic::transport::Channel;

pub const ALL: [&str; 3] = ["s1", "s2", "s3"];

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bosun"))
}

pub fn up(servers: usize, extra: &[&str]) -> Cluster {
    match Cluster::up(bin(), servers, extra) {
        Ok(c) => c,
        Err(e) => panic!("starting cluster: {e}"),
    }
}

pub async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> Result<i64, tonic::Status> {
    let r = kv
        .put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().header.map_or(0, |h| h.revision))
}

pub async fn get(
    kv: &mut KvClient<Channel>,
    k: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let r = kv
        .range(RangeRequest {
            key: k.into(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Every key under `prefix` with its value, read linearizably from `name`.
pub async fn dump(
    c: &Cluster,
    name: &str,
    prefix: &str,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut kv = c.kv(name).map_err(tonic::Status::internal)?;
    let r = kv
        .range(RangeRequest {
            key: prefix.into(),
            range_end: end,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

pub async fn leader(c: &Cluster, names: &[&str]) -> String {
    match eventually(Duration::from_secs(30), "a leader", || c.leader(names)).await {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

/// The store revision as `kv`'s server reports it (linearizable).
pub async fn revision(kv: &mut KvClient<Channel>) -> i64 {
    let r = kv
        .range(RangeRequest {
            key: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.header.map_or(0, |h| h.revision)
}
