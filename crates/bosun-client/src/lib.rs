//! A client of bosun's resource API (`bosun.api.v1.Resources`) for the CLI, agents and
//! tests: mTLS with a client certificate, failover across every configured server, objects
//! as `serde_json::Value`.
//!
//! Where to start: [`Client::connect`], then the verbs ([`Client::apply`], [`Client::list`],
//! [`Client::watch`], …). A call goes to the server that answered last; when that server
//! is unreachable or has no leader, the next one is tried. [`informer::Informer`] keeps a
//! watch-backed cache of one resource, for controllers.
#![forbid(unsafe_code)]

pub mod informer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bosun_api::resources::resources_client::ResourcesClient;
use bosun_api::resources::*;
use bosun_pki::TlsMaterial;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tonic::transport::Channel;
pub use tonic::Code;
use tonic::Status;

/// Largest message the client accepts (a list of many objects).
const MAX_MESSAGE: usize = 256 << 20;
/// Objects in one `CreateBatch` call at most.
pub const BATCH_ITEMS: usize = 500;
/// `CreateBatch` calls of one [`Client::create_batch`] in flight at most.
const BATCH_CALLS: usize = 4;
/// Bytes of objects in one `CreateBatch` call at most (well within the server's request
/// limit, the object limit plus 512 KiB).
pub const BATCH_BYTES: usize = 1 << 20;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client could not be set up (TLS files, addresses).
    #[error("connecting: {0}")]
    Setup(String),
    /// A server refused or failed the request; `reason` is Kubernetes' name for it.
    #[error("Error from server ({reason}): {message}")]
    Server {
        /// NotFound, AlreadyExists, Conflict, Forbidden, Invalid, BadRequest, …
        reason: &'static str,
        /// The server's message.
        message: String,
        /// The gRPC code.
        code: Code,
    },
    /// The reply was not what the protocol promises.
    #[error("malformed reply: {0}")]
    Decode(String),
}

impl Error {
    /// The gRPC code of a server error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let reason = match s.code() {
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::FailedPrecondition | Code::Aborted => "Conflict",
            Code::PermissionDenied => "Forbidden",
            Code::Unauthenticated => "Unauthorized",
            Code::InvalidArgument if s.message().contains("is invalid") => "Invalid",
            Code::InvalidArgument => "BadRequest",
            Code::OutOfRange => "Expired",
            Code::Unimplemented => "MethodNotAllowed",
            Code::Unavailable => "ServiceUnavailable",
            Code::ResourceExhausted => "TooManyRequests",
            Code::DataLoss => "InternalError",
            _ => "InternalError",
        };
        Error::Server {
            reason,
            message: s.message().to_string(),
            code: s.code(),
        }
    }
}

/// Result with the client error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One watch event; the object decoded as `T` (a whole `Value` unless a caller asks for
/// a typed view of only the fields it reads: see [`Client::watch_as`]).
#[derive(Debug, Clone)]
pub struct Event<T = Value> {
    /// ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
    pub kind: String,
    /// The object (a Status for ERROR).
    pub object: T,
    /// More events of the same resource version follow (one write changed several
    /// objects): resume a broken watch only from a version whose events were all seen.
    pub more: bool,
}

/// The outcome of `apply`.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The object as stored.
    pub object: Value,
    /// created, configured or unchanged.
    pub outcome: String,
}

/// A page of a list, its objects decoded as `T`.
#[derive(Debug, Clone, Default)]
pub struct List<T = Value> {
    /// The objects.
    pub items: Vec<T>,
    /// The revision the list is consistent at.
    pub resource_version: String,
    /// Non-empty when more remain.
    pub continue_token: String,
}

/// What to list or watch.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Plural resource.
    pub resource: String,
    /// Namespace, "" for all.
    pub namespace: String,
    /// Label selector.
    pub labels: String,
    /// Field selector.
    pub fields: String,
    /// Page size (0: all).
    pub limit: i64,
    /// Continue token of the previous page.
    pub continue_token: String,
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct Client {
    servers: Arc<Vec<(String, Channel)>>,
    current: Arc<AtomicUsize>,
    /// The leader term every write of this client is fenced by (leader-only work).
    fence: Option<u64>,
    /// Batch calls ask for brief answers (see [`Client::brief`]).
    brief: bool,
}

/// The metadata key carrying a fence term.
pub const FENCE_HEADER: &str = "bosun-fence-term";

/// The longest a unary call may take (a server that accepted the call and then went
/// silent must not hold a caller forever). Streams (watch, logs, exec) have none.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A unary request: fenced when asked, and bounded by [`CALL_TIMEOUT`].
fn fenced<T>(msg: T, fence: Option<u64>) -> tonic::Request<T> {
    let mut req = fenced_stream(msg, fence);
    req.set_timeout(CALL_TIMEOUT);
    req
}

/// A streaming request: fenced when asked, no deadline.
fn fenced_stream<T>(msg: T, fence: Option<u64>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(term) = fence {
        if let Ok(v) = term.to_string().parse() {
            req.metadata_mut().insert(FENCE_HEADER, v);
        }
    }
    req
}

fn retriable(s: &Status) -> bool {
    // Unreachable server, or a server without a leader: the write was not made there.
    s.code() == Code::Unavailable
}

/// How many items go in each call of a batch, for items of these sizes: at most
/// [`BATCH_ITEMS`] and [`BATCH_BYTES`] a call, and at least one.
fn batch_sizes(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for size in sizes {
        match out.last_mut() {
            Some(take) if *take < BATCH_ITEMS && bytes + size <= BATCH_BYTES => {
                *take += 1;
                bytes += size;
            }
            _ => {
                out.push(1);
                bytes = size;
            }
        }
    }
    out
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn object<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    bosun_api::json::from_bytes(b).map_err(|e| Error::Decode(e.to_string()))
}

impl Client {
    /// A client of the servers at `addrs` (host:port), with the user certificate in `tls`.
    ///
    /// # Errors
    /// When the TLS files are unusable or an address is malformed.
    pub fn connect(addrs: &[String], tls: &TlsMaterial) -> Result<Self> {
        if addrs.is_empty() {
            return Err(Error::Setup("no server address configured".into()));
        }
        let cfg = bosun_pki::client_config(tls).map_err(|e| Error::Setup(e.to_string()))?;
        let servers = addrs
            .iter()
            .map(|a| {
                bosun_pki::channel(a, cfg.clone())
                    .map(|c| (a.clone(), c))
                    .map_err(|e| Error::Setup(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Client {
            servers: Arc::new(servers),
            current: Arc::new(AtomicUsize::new(0)),
            fence: None,
            brief: false,
        })
    }

    /// A client of one server over `channel`, called `name` in errors and logs. The
    /// leader's scheduler and controllers reach their own server this way, in process
    /// ([`bosun_pki::local`]).
    pub fn over(name: &str, channel: Channel) -> Self {
        Client {
            servers: Arc::new(vec![(name.to_string(), channel)]),
            current: Arc::new(AtomicUsize::new(0)),
            fence: None,
            brief: false,
        }
    }

    /// The same client with every write fenced by the leader `term`: the store refuses
    /// such a write when it is committed in another term (a deposed leader's decision).
    pub fn with_fence(&self, term: u64) -> Client {
        Client {
            fence: Some(term),
            ..self.clone()
        }
    }

    /// The same client with batch calls ([`Client::create_batch`], [`Client::create_copies`],
    /// [`Client::bind_batch`], [`Client::patch_batch`]) answered briefly: each item that
    /// succeeded with its identity only (apiVersion, kind, metadata name, namespace, uid,
    /// resourceVersion, generation), not the whole object. For callers that need only the
    /// outcome: the server does not encode, nor this client decode, thousands of objects.
    pub fn brief(&self) -> Client {
        Client {
            brief: true,
            ..self.clone()
        }
    }

    /// Binds a pod to a node (`pods/binding`), as a scheduler does.
    ///
    /// # Errors
    /// Conflict when the pod is already bound or being deleted; NotFound.
    pub async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<Value> {
        let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace}, "target": {"kind": "Node", "name": node}});
        let req = WriteRequest {
            resource: "pods".into(),
            namespace: namespace.into(),
            subresource: "binding".into(),
            object: bytes(&binding),
            dry_run: false,
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.create(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Binds several pods in one call (`CreateBatch` of `pods/binding`): `(namespace, pod,
    /// node)` each. Every binding is answered as [`Client::bind`] would answer it alone.
    ///
    /// # Errors
    /// When a call fails as a whole (no server answers); then some bindings may have been
    /// made.
    pub async fn bind_batch(
        &self,
        bindings: &[(String, String, String)],
    ) -> Result<Vec<Result<Value>>> {
        let objs: Vec<Value> = bindings
            .iter()
            .map(|(ns, pod, node)| serde_json::json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod, "namespace": ns}, "target": {"kind": "Node", "name": node}}))
            .collect();
        self.batch("pods", "", "binding", &objs).await
    }

    /// Creates several objects of one resource in one call (`CreateBatch`); `namespace` is
    /// used for those that name none. Every object is answered as [`Client::create`] would
    /// answer it alone, and the server writes them in few store transactions.
    ///
    /// # Errors
    /// When a call fails as a whole (no server answers); then some objects may have been
    /// created.
    pub async fn create_batch(
        &self,
        resource: &str,
        namespace: &str,
        objs: &[Value],
    ) -> Result<Vec<Result<Value>>> {
        self.batch(resource, namespace, "", objs).await
    }

    /// Creates `n` objects from one (which names none: it has `metadata.generateName`),
    /// as [`Client::create_batch`] of `n` copies would, encoding it once.
    ///
    /// # Errors
    /// As [`Client::create_batch`].
    pub async fn create_copies(
        &self,
        resource: &str,
        namespace: &str,
        obj: &Value,
        n: usize,
    ) -> Result<Vec<Result<Value>>> {
        self.batch_encoded(resource, namespace, "", vec![bytes(obj); n])
            .await
    }

    /// Sends `objs` in calls of at most [`BATCH_ITEMS`] objects and [`BATCH_BYTES`] bytes.
    async fn batch(
        &self,
        resource: &str,
        namespace: &str,
        subresource: &str,
        objs: &[Value],
    ) -> Result<Vec<Result<Value>>> {
        let encoded: Vec<Vec<u8>> = objs.iter().map(bytes).collect();
        self.batch_encoded(resource, namespace, subresource, encoded)
            .await
    }

    /// [`Client::batch`] of objects already encoded.
    async fn batch_encoded(
        &self,
        resource: &str,
        namespace: &str,
        subresource: &str,
        mut encoded: Vec<Vec<u8>>,
    ) -> Result<Vec<Result<Value>>> {
        let requests: Vec<BatchWriteRequest> = batch_sizes(encoded.iter().map(Vec::len))
            .into_iter()
            .map(|take| BatchWriteRequest {
                resource: resource.into(),
                namespace: namespace.into(),
                subresource: subresource.into(),
                objects: encoded.drain(..take).collect(),
                dry_run: false,
                brief: self.brief,
            })
            .collect();
        self.batch_calls(
            requests,
            |req| req.objects.len(),
            |mut c, req| async move { c.create_batch(req).await },
        )
        .await
    }

    /// Applies JSON merge patches to several objects of one resource in few calls
    /// (`PatchBatch`): `(namespace, name, patch)` each. Every patch is answered as
    /// [`Client::patch`] would answer it alone, and the server writes them in few store
    /// transactions.
    ///
    /// # Errors
    /// When a call fails as a whole (no server answers); then some patches may have been
    /// applied.
    pub async fn patch_batch(
        &self,
        resource: &str,
        subresource: &str,
        patches: &[(String, String, Value)],
    ) -> Result<Vec<Result<Value>>> {
        let mut items: Vec<PatchItem> = patches
            .iter()
            .map(|(ns, name, patch)| PatchItem {
                namespace: ns.clone(),
                name: name.clone(),
                patch: bytes(patch),
            })
            .collect();
        let requests: Vec<BatchPatchRequest> = batch_sizes(items.iter().map(|i| i.patch.len()))
            .into_iter()
            .map(|take| BatchPatchRequest {
                resource: resource.into(),
                subresource: subresource.into(),
                items: items.drain(..take).collect(),
                dry_run: false,
                brief: self.brief,
            })
            .collect();
        self.batch_calls(
            requests,
            |req| req.items.len(),
            |mut c, req| async move { c.patch_batch(req).await },
        )
        .await
    }

    /// Makes the calls of one batch, a few at a time, and gives every item its answer in
    /// order; `items` tells how many items a request holds.
    async fn batch_calls<R, F, Fut>(
        &self,
        requests: Vec<R>,
        items: fn(&R) -> usize,
        send: F,
    ) -> Result<Vec<Result<Value>>>
    where
        R: Clone,
        F: Fn(ResourcesClient<Channel>, tonic::Request<R>) -> Fut + Copy,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<BatchReply>, Status>>,
    {
        // A few calls at once: the server admits one batch while the store writes another.
        let replies: Vec<Result<(usize, BatchReply)>> = futures::stream::iter(requests)
            .map(|req| async move {
                let take = items(&req);
                self.call(|c, fence| send(c, fenced(req.clone(), fence)))
                    .await
                    .map(|r| (take, r))
            })
            .buffered(BATCH_CALLS)
            .collect()
            .await;
        let mut out = Vec::new();
        for reply in replies {
            let (take, r) = reply?;
            if r.items.len() != take {
                return Err(Error::Decode(format!(
                    "{} answers to a batch of {take}",
                    r.items.len()
                )));
            }
            out.extend(r.items.into_iter().map(|item| {
                if item.code == 0 {
                    object(&item.object)
                } else {
                    Err(Status::new(Code::from(item.code), item.message).into())
                }
            }));
        }
        Ok(out)
    }

    /// The server that answered the last call.
    pub fn server(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.servers.len();
        &self.servers[i].0
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(ResourcesClient<Channel>, Option<u64>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.on_servers(
            |ch| {
                let client = ResourcesClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                f(client, self.fence)
            },
            retriable,
        )
        .await
    }

    /// Runs `f` on the server that answered last, then on the others in turn while the
    /// answer is one that `next` says another server may not give.
    async fn on_servers<T, F, Fut>(&self, f: F, next: fn(&Status) -> bool) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let n = self.servers.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            // Bounded here too: a server that never answers (its connection wedged) does
            // not see the deadline in the request. For a stream this covers only its
            // start, until the server answers.
            let answer =
                match tokio::time::timeout(CALL_TIMEOUT, f(self.servers[idx].1.clone())).await {
                    Ok(a) => a,
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "no answer from {} within {CALL_TIMEOUT:?}",
                        self.servers[idx].0
                    ))),
                };
            match answer {
                Ok(r) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(r.into_inner());
                }
                Err(s) if next(&s) => {
                    tracing::debug!(server = %self.servers[idx].0, error = %s.message(), "server unavailable; trying the next");
                    last = Some(s);
                }
                Err(s) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Err(s.into());
                }
            }
        }
        Err(last
            .map(Error::from)
            .unwrap_or_else(|| Error::Setup("no server".into())))
    }

    /// Creates an object (`namespace` is used when the object names none).
    ///
    /// # Errors
    /// As the server reports them (AlreadyExists, Invalid, Forbidden, …).
    pub async fn create(&self, resource: &str, namespace: &str, obj: &Value) -> Result<Value> {
        let req = WriteRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: bytes(obj),
            ..Default::default()
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.create(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Reads one object.
    ///
    /// # Errors
    /// NotFound, Forbidden, …
    pub async fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Value> {
        let req = GetRequest {
            target: Some(Target {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
                subresource: String::new(),
            }),
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.get(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Lists one page.
    ///
    /// # Errors
    /// Bad selectors, Forbidden, Expired (continue token too old), …
    pub async fn list(&self, q: &Query) -> Result<List> {
        self.list_as(q).await
    }

    /// As [`Client::list`], each object decoded as `T`: a struct of only the fields a
    /// caller reads skips building (and dropping) the rest of every object.
    ///
    /// # Errors
    /// As [`Client::list`]; Decode when an object does not fit `T`.
    pub async fn list_as<T: serde::de::DeserializeOwned>(&self, q: &Query) -> Result<List<T>> {
        let req = ListRequest {
            resource: q.resource.clone(),
            namespace: q.namespace.clone(),
            label_selector: q.labels.clone(),
            field_selector: q.fields.clone(),
            limit: q.limit,
            continue_token: q.continue_token.clone(),
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.list(fenced(req, fence)).await }
            })
            .await?;
        Ok(List {
            items: r.items.iter().map(|b| object(b)).collect::<Result<_>>()?,
            resource_version: r.resource_version,
            continue_token: r.continue_token,
        })
    }

    /// Lists every page.
    ///
    /// # Errors
    /// As [`Client::list`].
    pub async fn list_all(&self, q: &Query) -> Result<List> {
        self.list_all_as(q).await
    }

    /// Lists every page, each object decoded as `T`.
    ///
    /// # Errors
    /// As [`Client::list_as`].
    pub async fn list_all_as<T: serde::de::DeserializeOwned>(&self, q: &Query) -> Result<List<T>> {
        let mut q = q.clone();
        let mut out = self.list_as(&q).await?;
        while !out.continue_token.is_empty() {
            q.continue_token = std::mem::take(&mut out.continue_token);
            let page = self.list_as(&q).await?;
            out.items.extend(page.items);
            out.continue_token = page.continue_token;
        }
        Ok(out)
    }

    /// Replaces an object (compare-and-swap on its metadata.resourceVersion when set);
    /// `subresource` "status" replaces only the status.
    ///
    /// # Errors
    /// Conflict when the object changed since it was read; Invalid; NotFound; …
    pub async fn update(&self, resource: &str, subresource: &str, obj: &Value) -> Result<Value> {
        let req = WriteRequest {
            resource: resource.into(),
            subresource: subresource.into(),
            object: bytes(obj),
            ..Default::default()
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.update(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Applies a JSON merge patch.
    ///
    /// # Errors
    /// As [`Client::update`].
    pub async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        subresource: &str,
        patch: &Value,
    ) -> Result<Value> {
        let req = PatchRequest {
            target: Some(Target {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
                subresource: subresource.into(),
            }),
            patch: bytes(patch),
            dry_run: false,
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.patch(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Deletes an object (or marks it for deletion; see the protocol).
    ///
    /// # Errors
    /// NotFound, Conflict on a failed precondition, Forbidden, …
    pub async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<Value> {
        let req = DeleteRequest {
            target: Some(Target {
                resource: resource.into(),
                namespace: namespace.into(),
                name: name.into(),
                subresource: String::new(),
            }),
            grace_period_seconds,
            ..Default::default()
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.delete(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Deletes with every option of the protocol (propagation, preconditions, dry run).
    ///
    /// # Errors
    /// As [`Client::delete`].
    pub async fn delete_with(&self, req: DeleteRequest) -> Result<Value> {
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.delete(fenced(req, fence)).await }
            })
            .await?;
        object(&r.object)
    }

    /// Declaratively creates or updates a manifest.
    ///
    /// # Errors
    /// Invalid manifests, unknown kinds, Forbidden, …
    pub async fn apply(&self, namespace: &str, manifest: &Value) -> Result<Applied> {
        let req = ApplyRequest {
            object: bytes(manifest),
            namespace: namespace.into(),
            dry_run: false,
        };
        let r = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.apply(fenced(req, fence)).await }
            })
            .await?;
        Ok(Applied {
            object: object(&r.object)?,
            outcome: r.outcome,
        })
    }

    /// Whether the caller (or, for administrators, `as_user`) may do something.
    ///
    /// # Errors
    /// Forbidden when impersonating without the right to.
    pub async fn review(&self, req: ReviewRequest) -> Result<ReviewReply> {
        self.call(|mut c, fence| {
            let req = req.clone();
            async move { c.review(fenced(req, fence)).await }
        })
        .await
    }

    /// Watches changes from `resource_version` ("" for the current objects first).
    ///
    /// # Errors
    /// When the watch cannot start (bad selectors, Forbidden, Expired).
    pub async fn watch(
        &self,
        q: &Query,
        resource_version: &str,
        bookmarks: bool,
    ) -> Result<impl Stream<Item = Result<Event>>> {
        self.watch_as(q, resource_version, bookmarks).await
    }

    /// As [`Client::watch`], each event's object decoded as `T`.
    ///
    /// # Errors
    /// As [`Client::watch`]; an event whose object does not fit `T` ends the stream with
    /// Decode.
    pub async fn watch_as<T: serde::de::DeserializeOwned>(
        &self,
        q: &Query,
        resource_version: &str,
        bookmarks: bool,
    ) -> Result<impl Stream<Item = Result<Event<T>>>> {
        let req = WatchRequest {
            resource: q.resource.clone(),
            namespace: q.namespace.clone(),
            label_selector: q.labels.clone(),
            field_selector: q.fields.clone(),
            resource_version: resource_version.into(),
            allow_bookmarks: bookmarks,
        };
        let stream = self
            .call(|mut c, fence| {
                let req = req.clone();
                async move { c.watch(fenced_stream(req, fence)).await }
            })
            .await?;
        Ok(stream.map(|m| {
            let ev = m?;
            Ok(Event {
                kind: ev.r#type,
                object: object(&ev.object)?,
                more: ev.more,
            })
        }))
    }
}

/// Container I/O (`bosun logs`, `bosun exec`), relayed by the API server to the agent.
impl Client {
    /// The first server that answers, as a Pods client (an unavailable server, or agent,
    /// is tried through the next server: nothing was started there).
    async fn pods<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(bosun_api::resources::pods_client::PodsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.on_servers(
            |ch| f(bosun_api::resources::pods_client::PodsClient::new(ch)),
            retriable,
        )
        .await
    }

    /// cpu and memory of pods or nodes, read by the agents from their runtime.
    ///
    /// # Errors
    /// Forbidden (list pods or nodes), Unavailable.
    pub async fn top(&self, req: TopRequest) -> Result<TopReply> {
        self.pods(|mut c| {
            let req = req.clone();
            async move { c.top(req).await }
        })
        .await
    }

    /// A container's output (`follow` streams until the container ends or the stream is
    /// dropped).
    ///
    /// # Errors
    /// NotFound, Forbidden (pods/log), FailedPrecondition (pod not bound), Unavailable.
    pub async fn logs(&self, req: LogsRequest) -> Result<impl Stream<Item = Result<Output>>> {
        let s = self
            .pods(|mut c| {
                let req = req.clone();
                async move { c.logs(req).await }
            })
            .await?;
        Ok(s.map(|m| m.map_err(Error::from)))
    }

    /// Runs a command in a container: `input` yields stdin messages after the start
    /// message this call sends; the output ends with the exit code.
    ///
    /// # Errors
    /// As [`Client::logs`], with pods/exec.
    pub async fn exec<S>(
        &self,
        start: ExecStart,
        input: S,
    ) -> Result<impl Stream<Item = Result<Output>>>
    where
        S: Stream<Item = ExecInput> + Send + 'static,
    {
        // Each attempt pulls stdin from one shared stream: an attempt that fails to connect
        // has read nothing, and the next one gets all of it.
        let shared = Arc::new(tokio::sync::Mutex::new(input.boxed()));
        let first = ExecInput {
            input: Some(exec_input::Input::Start(start)),
        };
        let s = self
            .pods(|mut c| {
                let rest = futures::stream::unfold(shared.clone(), |rx| async move {
                    let item = rx.lock().await.next().await?;
                    Some((item, rx))
                });
                let first = first.clone();
                async move {
                    let head = futures::stream::once(async move { first });
                    c.exec(head.chain(rest)).await
                }
            })
            .await?;
        Ok(s.map(|m| m.map_err(Error::from)))
    }
}
