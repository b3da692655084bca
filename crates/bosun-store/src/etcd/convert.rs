//! Conversions between the etcd protobuf messages and the store's command types.

use bosun_api::etcd as pb;
use bosun_api::mvcc;
use tonic::Status;

use crate::command::*;

impl From<KeyValue> for mvcc::KeyValue {
    fn from(k: KeyValue) -> Self {
        mvcc::KeyValue {
            key: k.key,
            create_revision: k.create_revision,
            mod_revision: k.mod_revision,
            version: k.version,
            value: k.value,
            lease: k.lease,
        }
    }
}

pub(crate) fn event(e: Event, with_prev: bool) -> mvcc::Event {
    mvcc::Event {
        r#type: match e.kind {
            EventKind::Put => mvcc::event::EventType::Put as i32,
            EventKind::Delete => mvcc::event::EventType::Delete as i32,
        },
        kv: Some(e.kv.into()),
        prev_kv: if with_prev {
            e.prev.map(Into::into)
        } else {
            None
        },
    }
}

fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    Ok(())
}

pub(crate) fn range(r: pb::RangeRequest) -> Result<RangeReq, Status> {
    check_key(&r.key)?;
    if r.limit < 0 {
        return Err(Status::invalid_argument(
            "etcdserver: limit must not be negative",
        ));
    }
    if r.revision < 0 {
        return Err(Status::invalid_argument(
            "etcdserver: revision must not be negative",
        ));
    }
    use pb::range_request::{SortOrder as O, SortTarget as T};
    Ok(RangeReq {
        range: KeyRange {
            key: r.key,
            end: r.range_end,
        },
        limit: r.limit,
        revision: r.revision,
        sort_order: match O::try_from(r.sort_order) {
            Ok(O::Ascend) => SortOrder::Ascend,
            Ok(O::Descend) => SortOrder::Descend,
            Ok(O::None) => SortOrder::None,
            Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort order")),
        },
        sort_target: match T::try_from(r.sort_target) {
            Ok(T::Key) => SortTarget::Key,
            Ok(T::Version) => SortTarget::Version,
            Ok(T::Create) => SortTarget::Create,
            Ok(T::Mod) => SortTarget::Mod,
            Ok(T::Value) => SortTarget::Value,
            Err(_) => return Err(Status::invalid_argument("etcdserver: invalid sort target")),
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub(crate) fn put(p: pb::PutRequest, max_value: usize) -> Result<PutReq, Status> {
    check_key(&p.key)?;
    if p.value.len() + p.key.len() > max_value {
        return Err(Status::invalid_argument(format!(
            "etcdserver: request is too large: key and value are {} bytes, the limit is {max_value}",
            p.value.len() + p.key.len()
        )));
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(PutReq {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub(crate) fn delete(d: pb::DeleteRangeRequest) -> Result<DeleteReq, Status> {
    check_key(&d.key)?;
    Ok(DeleteReq {
        range: KeyRange {
            key: d.key,
            end: d.range_end,
        },
        prev_kv: d.prev_kv,
    })
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    check_key(&c.key)?;
    let op = match R::try_from(c.result) {
        Ok(R::Equal) => CompareOp::Equal,
        Ok(R::Greater) => CompareOp::Greater,
        Ok(R::Less) => CompareOp::Less,
        Ok(R::NotEqual) => CompareOp::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid compare result",
            ))
        }
    };
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Version), Some(U::Version(v))) => CompareTarget::Version(v),
        (Ok(T::Create), Some(U::CreateRevision(v))) => CompareTarget::Create(v),
        (Ok(T::Mod), Some(U::ModRevision(v))) => CompareTarget::Mod(v),
        (Ok(T::Value), Some(U::Value(v))) => CompareTarget::Value(v),
        (Ok(T::Lease), Some(U::Lease(v))) => CompareTarget::Lease(v),
        // proto3 drops zero-valued oneof members on some clients: a missing operand is 0.
        (Ok(T::Version), None) => CompareTarget::Version(0),
        (Ok(T::Create), None) => CompareTarget::Create(0),
        (Ok(T::Mod), None) => CompareTarget::Mod(0),
        (Ok(T::Value), None) => CompareTarget::Value(vec![]),
        (Ok(T::Lease), None) => CompareTarget::Lease(0),
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: compare target and operand do not match",
            ))
        }
    };
    Ok(Compare {
        range: KeyRange {
            key: c.key,
            end: c.range_end,
        },
        op,
        target,
    })
}

fn op(o: pb::RequestOp, max_value: usize, depth: usize) -> Result<Op, Status> {
    use pb::request_op::Request as R;
    match o.request {
        Some(R::RequestRange(r)) => Ok(Op::Range(range(r)?)),
        Some(R::RequestPut(p)) => Ok(Op::Put(put(p, max_value)?)),
        Some(R::RequestDeleteRange(d)) => Ok(Op::Delete(delete(d)?)),
        Some(R::RequestTxn(t)) => Ok(Op::Txn(txn_depth(t, max_value, depth + 1)?)),
        None => Err(Status::invalid_argument("etcdserver: empty request op")),
    }
}

/// Most operations in one transaction branch, as etcd's default `--max-txn-ops`.
pub(crate) const MAX_TXN_OPS: usize = 128;

fn txn_depth(t: pb::TxnRequest, max_value: usize, depth: usize) -> Result<TxnReq, Status> {
    if depth > 4 {
        return Err(Status::invalid_argument(
            "etcdserver: transactions nested too deeply",
        ));
    }
    if t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
        || t.compare.len() > MAX_TXN_OPS
    {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    Ok(TxnReq {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(|o| op(o, max_value, depth))
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(|o| op(o, max_value, depth))
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn txn(t: pb::TxnRequest, max_value: usize) -> Result<TxnReq, Status> {
    txn_depth(t, max_value, 0)
}

pub(crate) fn range_response(
    r: RangeResult,
    header: Option<pb::ResponseHeader>,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(Into::into).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(crate) fn txn_response(t: TxnResult, header: Option<pb::ResponseHeader>) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                OpResult::Range(rr) => R::ResponseRange(range_response(rr, header)),
                OpResult::Put { prev } => R::ResponsePut(pb::PutResponse {
                    header,
                    prev_kv: prev.map(Into::into),
                }),
                OpResult::Delete { deleted, prev } => {
                    R::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header,
                        deleted,
                        prev_kvs: prev.into_iter().map(Into::into).collect(),
                    })
                }
                OpResult::Txn(inner) => R::ResponseTxn(txn_response(inner, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header,
        succeeded: t.succeeded,
        responses,
    }
}
