//! The upstream connector: TCP connects that count against the service's `max_connections`.
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

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::lane::Shared;
use crate::proxy::BoxError;
use crate::resilience::{ConnectionPermit, Overflow};

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
            let io = connecting.await?;
            Ok(Counted {
                io,
                _permit: permit,
            })
        })
    }
}

/// An upstream TCP connection holding its permit.
pub(crate) struct Counted {
    io: TokioIo<TcpStream>,
    _permit: Option<ConnectionPermit>,
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
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
