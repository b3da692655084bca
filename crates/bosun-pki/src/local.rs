//! In-process connections to a server's own API.
//!
//! The Raft leader runs the scheduler and the controllers inside the server process. They
//! use the API as every client does, through its gRPC services: authenticated, authorised
//! and admitted. Over TLS on loopback TCP, both ends of each of their connections were in
//! this one process, which encrypted every byte once and decrypted it once, and made system
//! calls for every write and read. A local connection is an in-memory pipe instead. It
//! carries the identity of the server's own certificate, as a TLS connection carries the
//! peer's verified one. Nothing outside the process can open one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use crate::identity::{Identity, PeerInfo};
use crate::tls::{TlsConn, TlsIncoming};

/// Bytes buffered in each direction of a local connection (h2's flow control works
/// within it: a writer waits when its reader lags).
const PIPE_BYTES: usize = 256 * 1024;
/// Local connections opened but not yet accepted by the server.
const BACKLOG: usize = 16;

/// The server's end of a local connection.
pub struct LocalConn {
    io: DuplexStream,
    info: PeerInfo,
}

impl Connected for LocalConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Opens local connections to the server whose [`LocalIncoming`] is its pair.
#[derive(Clone)]
pub struct LocalConnector {
    tx: mpsc::Sender<LocalConn>,
    identity: Identity,
    /// Set by [`LocalConnector::close`]: no new connection is opened.
    closed: Arc<AtomicBool>,
}

/// The local connections opened through its [`LocalConnector`], for the server to serve.
pub struct LocalIncoming {
    rx: mpsc::Receiver<LocalConn>,
}

/// A connector and the server's side of it. Every connection opened through the
/// connector is in the name of `identity` (the server's own).
pub fn local(identity: Identity) -> (LocalConnector, LocalIncoming) {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let closed = Arc::new(AtomicBool::new(false));
    (
        LocalConnector {
            tx,
            identity,
            closed,
        },
        LocalIncoming { rx },
    )
}

impl LocalConnector {
    /// A lazily connecting tonic channel over local connections. A call fails with
    /// Unavailable once the server has stopped accepting them.
    pub fn channel(&self) -> tonic::transport::Channel {
        let me = self.clone();
        // The URI only names the connection in tonic's logs: the connector ignores it.
        let endpoint = tonic::transport::Endpoint::from_static("http://in-process.invalid")
            // Bounded: a server that stops accepting (its backlog full) fails the call.
            .connect_timeout(std::time::Duration::from_secs(2));
        let connector = tower::service_fn(move |_: http::Uri| {
            let me = me.clone();
            async move { me.open().await.map(TokioIo::new) }
        });
        endpoint.connect_with_connector_lazy(connector)
    }

    /// Refuses every connection from now on, on every clone. A server shutting down
    /// calls it: tonic keeps its listener open while it drains, and a connection opened
    /// then would wait unserved.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Opens one connection: the client's end.
    async fn open(&self) -> io::Result<DuplexStream> {
        if self.closed.load(Ordering::Acquire) {
            return Err(refused());
        }
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let info = PeerInfo {
            remote: None,
            identity: Some(self.identity.clone()),
        };
        self.tx
            .send(LocalConn { io: server, info })
            .await
            .map_err(|_| refused())?;
        Ok(client)
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "the server no longer accepts in-process connections",
    )
}

impl futures::Stream for LocalIncoming {
    type Item = io::Result<LocalConn>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// A connection on a server's client port: over TLS from outside, or local.
pub enum ClientConn {
    /// Accepted on the TCP listener, its peer verified (boxed: a TLS stream is 1.3 KB).
    Tls(Box<TlsConn>),
    /// Opened in this process.
    Local(LocalConn),
}

impl Connected for ClientConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match self {
            ClientConn::Tls(c) => c.connect_info(),
            ClientConn::Local(c) => c.connect_info(),
        }
    }
}

/// Both kinds of connection, for tonic's `serve_with_incoming`. Ends when the TLS
/// listener ends; local connections stop when their connectors are all dropped.
pub struct ClientIncoming {
    tls: TlsIncoming,
    local: Option<LocalIncoming>,
}

impl ClientIncoming {
    /// The connections of `tls` and of `local`.
    pub fn new(tls: TlsIncoming, local: LocalIncoming) -> Self {
        ClientIncoming {
            tls,
            local: Some(local),
        }
    }
}

impl futures::Stream for ClientIncoming {
    type Item = io::Result<ClientConn>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(local) = self.local.as_mut() {
            match Pin::new(local).poll_next(cx) {
                Poll::Ready(Some(c)) => return Poll::Ready(Some(c.map(ClientConn::Local))),
                Poll::Ready(None) => self.local = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.tls)
            .poll_next(cx)
            .map(|c| c.map(|c| c.map(|c| ClientConn::Tls(Box::new(c)))))
    }
}

/// What both kinds of connection are, for forwarding to either.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

impl ClientConn {
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Io> {
        match self.get_mut() {
            ClientConn::Tls(c) => Pin::new(&mut **c),
            ClientConn::Local(c) => Pin::new(&mut c.io),
        }
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ClientConn::Tls(c) => c.is_write_vectored(),
            ClientConn::Local(c) => c.io.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn me() -> Identity {
        Identity {
            user: "s1".into(),
            groups: vec![crate::SERVERS_GROUP.into()],
        }
    }

    #[tokio::test]
    async fn a_local_connection_carries_the_servers_identity_and_its_bytes() {
        let (connector, mut incoming) = local(me());
        let mut client = connector.open().await.expect("the server accepts");
        let Some(Ok(conn)) = incoming.next().await else {
            panic!("no connection accepted");
        };
        assert_eq!(conn.connect_info().identity, Some(me()));
        assert!(conn.connect_info().remote.is_none());
        let mut conn = ClientConn::Local(conn);
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong").await.expect("write");
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn a_stopped_server_refuses_new_local_connections() {
        let (connector, incoming) = local(me());
        drop(incoming);
        let err = connector.open().await.expect_err("nobody accepts");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_closed_connector_refuses_on_every_clone_while_the_listener_lives() {
        let (connector, _incoming) = local(me());
        let clone = connector.clone();
        connector.close();
        let err = clone.open().await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
