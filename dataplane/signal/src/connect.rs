//! The upstream connector: TCP connects that count against the service's `max_connections`,
//! then mutual TLS ([`UpstreamConnector`]).
//!
//! Each new upstream connection takes a [`ConnectionPermit`] from the breaker of the service
//! that owns the endpoint (the mesh table in use maps `host:port` to it) and holds it for as
//! long as the connection lives, pooled or busy. At the limit the connect fails at once with
//! [`Overflow::Connections`], which the proxy answers with 503 without waiting; requests that
//! find a pooled connection are not affected. HTTP/2 multiplexes, so one connection per
//! endpoint and core is the usual count there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::lane::Shared;
use crate::proxy::BoxError;
use crate::resilience::{ConnectionPermit, Overflow};
use crate::tls::ALPN_H2;
use crate::tls_stream;

/// [`HttpConnector`] with connection counting.
#[derive(Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    shared: Arc<Shared>,
}

impl CountingConnector {
    pub(crate) fn new(shared: Arc<Shared>) -> CountingConnector {
        let mut inner = HttpConnector::new();
        // The TLS layer above decides the scheme.
        inner.enforce_http(false);
        // Small signaling messages must not wait for Nagle.
        inner.set_nodelay(true);
        CountingConnector { inner, shared }
    }
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let breaker = uri.authority().and_then(|a| {
            self.shared
                .table
                .load()
                .endpoint_breaker(a.as_str())
                .cloned()
        });
        let permit = match breaker.map(|b| b.try_connection()).transpose() {
            Ok(p) => p,
            Err(o) => return Box::pin(std::future::ready(Err(Box::new(o) as BoxError))),
        };
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?.into_inner();
            Ok(Counted {
                io,
                _permit: permit,
            })
        })
    }
}

/// An upstream TCP connection holding its permit.
pub(crate) struct Counted {
    io: TcpStream,
    _permit: Option<ConnectionPermit>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The upstream pools' connector: a counted TCP connection, then, for `https` URIs, mutual
/// TLS with the lane's SVID over [`tls_stream`] (no buffers held while the connection idles
/// in the pool or carries a quiet WebSocket).
#[derive(Clone)]
pub(crate) struct UpstreamConnector {
    tcp: CountingConnector,
    tls: Arc<ClientConfig>,
}

impl UpstreamConnector {
    /// `tls` must offer the ALPN protocol of the pool (`h2` or `http/1.1`).
    pub(crate) fn new(tcp: CountingConnector, tls: Arc<ClientConfig>) -> Self {
        UpstreamConnector { tcp, tls }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = Upstream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = (uri.scheme() == Some(&http::uri::Scheme::HTTPS)).then(|| {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            (self.tls.clone(), ServerName::try_from(host.to_owned()))
        });
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some((config, name)) = tls else {
                return Ok(Upstream {
                    io: TokioIo::new(UpstreamIo::Plain(tcp)),
                    h2: false,
                });
            };
            let stream = tls_stream::connect(config, name?, tcp).await?;
            let h2 = stream.conn().alpn_protocol() == Some(ALPN_H2);
            Ok(Upstream {
                io: TokioIo::new(UpstreamIo::Tls(Box::new(stream))),
                h2,
            })
        })
    }
}

enum UpstreamIo {
    Plain(Counted),
    Tls(Box<tls_stream::ClientStream<Counted>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upstream connection, plain or TLS, as hyper's pools hold it.
pub(crate) struct Upstream {
    io: TokioIo<UpstreamIo>,
    /// The server chose HTTP/2 by ALPN.
    h2: bool,
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl Read for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The breaker limit behind a failed upstream call, if a connect was refused by one.
pub(crate) fn overflow_of(e: &(dyn std::error::Error + 'static)) -> Option<Overflow> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(o) = err.downcast_ref::<Overflow>() {
            return Some(*o);
        }
        cur = err.source();
    }
    None
}
