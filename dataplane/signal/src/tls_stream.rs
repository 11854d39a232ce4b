//! TLS over a tokio byte stream with rustls' unbuffered API: a connection that is waiting for
//! bytes holds no buffer at all.
//!
//! `tokio-rustls` wraps rustls' buffered connections, which keep a 4 KiB receive buffer for
//! the life of the connection (rustls never shrinks it below one read's worth). The lane holds
//! two TLS legs per open WebSocket or TCP stream, most of them idle for hours, so that is 8 KiB
//! of every idle stream. Here the caller owns the buffers:
//!
//! - Reads go from the socket into a stack scratch and are decrypted there; plaintext is copied
//!   straight into the reader's buffer. Only what does not fit (the rest of a record larger than
//!   the reader's buffer, or the start of a record still in flight) is kept on the heap, and that
//!   allocation is freed as soon as it is used up.
//! - Writes are encrypted into a stack scratch and written to the socket at once; only what the
//!   socket does not take is kept, until a later write or flush sends it.
//!
//! The handshake, session tickets, key updates and alerts are rustls' own state machine
//! ([`rustls::unbuffered`]); this module only moves bytes. Errors from rustls come back as
//! `io::Error`s of kind `InvalidData` wrapping the [`rustls::Error`], as with `tokio-rustls`, so
//! callers can classify handshake failures.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Stack scratch for one socket read or one encrypted record: a full TLS 1.3 record (16 KiB of
/// plaintext, 5 header bytes, content type, 16-byte tag) plus room for the peer's padding.
const SCRATCH: usize = 17 * 1024;
/// Plaintext encrypted per `poll_write`: one full record.
const MAX_WRITE: usize = 16 * 1024;
/// What encryption adds to a record: TLS 1.3's header, content type and AEAD tag are 22 bytes.
const RECORD_OVERHEAD: usize = 64;

/// One side of a connection: rustls' unbuffered client or server.
pub trait Role: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> {
    /// rustls' per-side connection data.
    type Data;
    /// [`UnbufferedConnectionCommon::process_tls_records`] for this side.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Role for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Role for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// A server-side stream (the lane's downstream leg).
pub type ServerStream<IO> = TlsStream<IO, UnbufferedServerConnection>;
/// A client-side stream (the lane's upstream leg).
pub type ClientStream<IO> = TlsStream<IO, UnbufferedClientConnection>;

/// Accepts a TLS connection on `io`: runs the server handshake to completion.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<ServerStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut s = TlsStream::new(io, conn);
    poll_fn(|cx| s.poll_handshake(cx)).await?;
    Ok(s)
}

/// Opens a TLS connection to `name` over `io`: runs the client handshake to completion.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: IO,
) -> io::Result<ClientStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let mut s = TlsStream::new(io, conn);
    poll_fn(|cx| s.poll_handshake(cx)).await?;
    Ok(s)
}

/// A TLS connection over `IO`, after its handshake.
pub struct TlsStream<IO, C> {
    io: IO,
    conn: C,
    /// Received bytes not yet processed: the start of a record still arriving.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Encrypted bytes the socket has not taken yet, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// The peer sent close_notify, or closed the connection at a record boundary.
    read_eof: bool,
    /// Our close_notify is queued: nothing more may be written.
    closing: bool,
}

impl<IO, C> std::fmt::Debug for TlsStream<IO, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("buffered", &self.buffered_bytes())
            .field("read_eof", &self.read_eof)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

/// Where decrypted application data goes: the reader's buffer first, the rest kept.
struct Sink<'a, 'b> {
    dst: Option<&'a mut ReadBuf<'b>>,
    spill: &'a mut Vec<u8>,
}

impl Sink<'_, '_> {
    fn put(&mut self, mut data: &[u8]) {
        // Only straight to the reader while nothing is kept, so bytes stay in order.
        if self.spill.is_empty() {
            if let Some(dst) = self.dst.as_deref_mut() {
                let k = dst.remaining().min(data.len());
                dst.put_slice(&data[..k]);
                data = &data[k..];
            }
        }
        self.spill.extend_from_slice(data);
    }
}

/// Where [`run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Needs more bytes from the peer (handshake in progress, or open and idle).
    NeedBytes,
    /// The peer closed the connection cleanly (close_notify).
    PeerClosed,
}

/// Runs rustls' state machine over `incoming` until it needs more bytes: application data goes
/// to `sink`, records to send are appended to `out`. Returns how many bytes of `incoming` were
/// used up; the rest is the start of a record still arriving.
fn run<C: Role>(
    conn: &mut C,
    incoming: &mut [u8],
    sink: &mut Sink<'_, '_>,
    out: &mut Vec<u8>,
) -> Result<(usize, Stop), rustls::Error> {
    let mut used = 0;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[used..]);
        let stop = match state {
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec?;
                    discard += rec.discard;
                    sink.put(rec.payload);
                }
                None
            }
            // The lane's server configs never accept 0-RTT data.
            Ok(ConnectionState::ReadEarlyData(_)) => {
                return Err(rustls::Error::General("unexpected TLS early data".into()));
            }
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                encode_into(out, |buf| e.encode(buf))?;
                None
            }
            // `out` is ours: it is sent before anything written later, so rustls may consider
            // it transmitted now.
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                None
            }
            Ok(ConnectionState::BlockedHandshake) | Ok(ConnectionState::WriteTraffic(_)) => {
                Some(Stop::NeedBytes)
            }
            Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => Some(Stop::PeerClosed),
            Ok(_) => Some(Stop::NeedBytes),
            Err(e) => {
                // rustls queues the matching alert; send it with the error. The same buffer
                // again: its handshake deframer still points into it.
                used += discard;
                let status = conn.process(&mut incoming[used..]);
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) = status.state {
                    let _ = encode_into(out, |buf| enc.encode(buf));
                }
                return Err(e);
            }
        };
        used += discard;
        if let Some(stop) = stop {
            return Ok((used, stop));
        }
    }
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 2048;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(rustls::Error::General(format!("TLS record encoding: {e}")));
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn encrypt_error(e: EncryptError) -> io::Error {
    io::Error::other(format!("TLS encryption: {e}"))
}

impl<IO, C> TlsStream<IO, C> {
    fn new(io: IO, conn: C) -> Self {
        TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            out: Vec::new(),
            out_at: 0,
            read_eof: false,
            closing: false,
        }
    }

    /// The rustls connection: negotiated ALPN, peer certificates, handshake kind.
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Heap bytes this stream holds beyond rustls' own state (0 while idle).
    pub fn buffered_bytes(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.out.capacity()
    }

    /// Moves kept plaintext into `buf`; true if any was there.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.plain_at >= self.plain.len() {
            return false;
        }
        let k = buf.remaining().min(self.plain.len() - self.plain_at);
        buf.put_slice(&self.plain[self.plain_at..self.plain_at + k]);
        self.plain_at += k;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        true
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Role> TlsStream<IO, C> {
    /// Writes out everything in `out`; frees it once sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if self.out.capacity() > 0 {
            self.out = Vec::new();
            self.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has into `rb`, emptied first; still empty afterwards is end of
    /// stream. The scratch behind `rb` need not be initialised, so nothing is zeroed per read.
    fn poll_recv(&mut self, cx: &mut Context<'_>, rb: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        rb.clear();
        Pin::new(&mut self.io).poll_read(cx, rb)
    }

    /// Feeds `fresh` bytes from the socket to rustls, after whatever partial record was kept.
    fn feed(&mut self, fresh: &mut [u8], dst: Option<&mut ReadBuf<'_>>) -> io::Result<Stop> {
        let mut sink = Sink {
            dst,
            spill: &mut self.plain,
        };
        let stop = if self.incoming.is_empty() {
            let (used, stop) =
                run(&mut self.conn, fresh, &mut sink, &mut self.out).map_err(tls_error)?;
            if stop != Stop::PeerClosed {
                self.incoming.extend_from_slice(&fresh[used..]);
            }
            stop
        } else {
            self.incoming.extend_from_slice(fresh);
            let (used, stop) = run(&mut self.conn, &mut self.incoming, &mut sink, &mut self.out)
                .map_err(tls_error)?;
            self.incoming.drain(..used);
            if self.incoming.is_empty() || stop == Stop::PeerClosed {
                self.incoming = Vec::new();
            }
            stop
        };
        if stop == Stop::PeerClosed {
            self.read_eof = true;
        }
        Ok(stop)
    }

    /// Drives the handshake until rustls says it is complete, with its last flight sent.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut raw = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut rb = ReadBuf::uninit(&mut raw);
        loop {
            if let Err(e) = self.feed(rb.filled_mut(), None) {
                // The alert, if the socket takes it now.
                let _ = self.poll_send(cx);
                return Poll::Ready(Err(e));
            }
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.read_eof {
                return Poll::Ready(Err(eof_in_handshake()));
            }
            ready!(self.poll_recv(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(eof_in_handshake()));
            }
        }
    }

    /// Runs the state machine on no new bytes until application data may be written, sending
    /// rustls' queued records (key updates) first; `f` then encrypts.
    fn with_write<R>(
        &mut self,
        f: impl FnOnce(&mut rustls::unbuffered::WriteTraffic<'_, C::Data>) -> R,
    ) -> io::Result<R> {
        let mut f = Some(f);
        loop {
            // Always the kept bytes, never an empty slice: rustls remembers where the parts of
            // a handshake message split over records lie in the buffer it was last given.
            let TlsStream {
                conn,
                incoming,
                out,
                plain,
                read_eof,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[..]);
            let mut done = None;
            match state.map_err(tls_error)? {
                ConnectionState::WriteTraffic(mut w) => done = f.take().map(|f| f(&mut w)),
                ConnectionState::EncodeTlsData(mut e) => {
                    encode_into(out, |buf| e.encode(buf)).map_err(tls_error)?;
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec.map_err(tls_error)?;
                        discard += rec.discard;
                        plain.extend_from_slice(rec.payload);
                    }
                }
                ConnectionState::PeerClosed => *read_eof = true,
                ConnectionState::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                _ => {
                    return Err(io::Error::other(
                        "TLS stream written before its handshake completed",
                    ));
                }
            }
            if discard > 0 {
                incoming.drain(..discard);
                if incoming.is_empty() {
                    *incoming = Vec::new();
                }
            }
            if let Some(r) = done {
                return Ok(r);
            }
        }
    }
}

fn eof_in_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection during the TLS handshake",
    )
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Role + Unpin> AsyncRead for TlsStream<IO, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 || this.take_plain(buf) {
            return Poll::Ready(Ok(()));
        }
        // Records rustls produced while reading (key update answers, alerts) go out when the
        // socket takes them; a full send buffer must not stop reading.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        let mut raw = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut rb = ReadBuf::uninit(&mut raw);
        let before = buf.filled().len();
        loop {
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_recv(cx, &mut rb))?;
            if rb.filled().is_empty() {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection in the middle of a TLS record",
                    )));
                }
                // Closed at a record boundary without close_notify: many peers do, and every
                // byte they sent has been delivered.
                this.read_eof = true;
                return Poll::Ready(Ok(()));
            }
            this.feed(rb.filled_mut(), Some(buf))?;
            if !this.out.is_empty() {
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if buf.filled().len() > before || this.take_plain(buf) {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin, C: Role + Unpin> AsyncWrite for TlsStream<IO, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = data.len().min(MAX_WRITE);
        // Only as much of the scratch as the record needs is zeroed.
        let mut raw = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let mut rb = ReadBuf::uninit(&mut raw);
        let scratch = rb.initialize_unfilled_to((take + RECORD_OVERHEAD).min(SCRATCH));
        let n = match this.with_write(|w| w.encrypt(&data[..take], scratch))? {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                let scratch = rb.initialize_unfilled_to(required_size.min(SCRATCH));
                this.with_write(|w| w.encrypt(&data[..take], scratch))?
                    .map_err(encrypt_error)?
            }
            Err(e) => return Poll::Ready(Err(encrypt_error(e))),
        };
        let scratch = rb.initialize_unfilled_to(n);
        // A key update rustls decided on while encrypting must reach the peer before the data
        // encrypted under the new key.
        this.with_write(|_| ())?;
        if this.out.is_empty() {
            match Pin::new(&mut this.io).poll_write(cx, &scratch[..n]) {
                Poll::Ready(Ok(k)) if k >= n => {}
                Poll::Ready(Ok(k)) => this.out.extend_from_slice(&scratch[k..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The data is encrypted and ours to send: the next write or flush waits for it.
                Poll::Pending => this.out.extend_from_slice(&scratch[..n]),
            }
        } else {
            this.out.extend_from_slice(&scratch[..n]);
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            ready!(this.poll_send(cx))?;
            this.closing = true;
            let mut alert = [0u8; 64];
            // Already closed both ways, or broken: then there is nothing more to say.
            if let Ok(Ok(n)) = this.with_write(|w| w.queue_close_notify(&mut alert)) {
                this.out.extend_from_slice(&alert[..n]);
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Identity, TlsState, TrustBundle};
    use popmesh_ctrl_api::SpiffeId;
    use popmesh_ctrld::ca::Ca;
    use std::time::{Duration, SystemTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct TestPki {
        server: Arc<TlsState>,
        client: Arc<TlsState>,
        /// A client whose SVID comes from another CA of the same trust domain.
        stranger: Arc<TlsState>,
    }

    fn svid(ca: &Ca, name: &str) -> Identity {
        let id = SpiffeId::new("pop.test", "default", name).unwrap();
        let issued = ca
            .issue(&id, Duration::from_secs(3600), None, SystemTime::now())
            .unwrap();
        let chain = format!("{}{}", issued.cert_pem, issued.chain_pem);
        Identity::from_pem(chain.as_bytes(), issued.key_pem.unwrap().as_bytes()).unwrap()
    }

    fn test_pki() -> TestPki {
        let record = Ca::generate_root("pop.test", SystemTime::now()).unwrap();
        let bundle = || TrustBundle::from_pem("pop.test", record.roots_pem.as_bytes()).unwrap();
        let ca = Ca::load(record.clone()).unwrap();
        let other = Ca::load(Ca::generate_root("pop.test", SystemTime::now()).unwrap()).unwrap();
        TestPki {
            server: TlsState::new(svid(&ca, "server"), bundle()).unwrap(),
            client: TlsState::new(svid(&ca, "client"), bundle()).unwrap(),
            stranger: TlsState::new(svid(&other, "client"), bundle()).unwrap(),
        }
    }

    impl TestPki {
        fn server_config(&self) -> Arc<ServerConfig> {
            self.server.server_config(&[])
        }
        fn client_config(&self) -> Arc<ClientConfig> {
            self.client.client_config(&[])
        }
        fn stranger_config(&self) -> Arc<ClientConfig> {
            self.stranger.client_config(&[])
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Our server against tokio-rustls' client, over a pipe small enough that records split.
    #[tokio::test]
    async fn server_side_interoperates_and_holds_nothing_while_idle() {
        let pki = test_pki();
        let (a, b) = tokio::io::duplex(1000);
        let server = tokio::spawn(accept(pki.server_config(), a));
        let connector = tokio_rustls::TlsConnector::from(pki.client_config());
        let mut client = connector
            .connect(ServerName::try_from("localhost").unwrap(), b)
            .await
            .unwrap();
        let mut server = server.await.unwrap().unwrap();
        assert!(server.conn().peer_certificates().is_some());
        assert_eq!(server.buffered_bytes(), 0);

        let up = pattern(300_000, 1);
        let down = pattern(200_000, 7);
        let (up2, down2) = (up.clone(), down.clone());
        let c = tokio::spawn(async move {
            client.write_all(&up2).await.unwrap();
            client.flush().await.unwrap();
            let mut got = vec![0; down2.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, down2);
            client
        });
        let mut got = vec![0; up.len()];
        // Small reads: a record larger than the reader's buffer is kept and handed out in parts.
        let mut at = 0;
        while at < got.len() {
            let end = (at + 100).min(got.len());
            let k = server.read(&mut got[at..end]).await.unwrap();
            assert!(k > 0);
            at += k;
        }
        assert_eq!(got, up);
        server.write_all(&down).await.unwrap();
        server.flush().await.unwrap();
        let mut client = c.await.unwrap();
        assert_eq!(server.buffered_bytes(), 0, "idle after the exchange");

        // close_notify from the client ends the server's reads cleanly.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    /// Our client against tokio-rustls' server; our shutdown sends close_notify.
    #[tokio::test]
    async fn client_side_interoperates_and_closes_with_close_notify() {
        let pki = test_pki();
        let (a, b) = tokio::io::duplex(700);
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
        let server = tokio::spawn(async move {
            let mut s = acceptor.accept(a).await.unwrap();
            let mut got = Vec::new();
            // Ends on the client's close_notify (tokio-rustls errors on a bare EOF).
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
            got.len()
        });
        let mut client = connect(
            pki.client_config(),
            ServerName::try_from("localhost").unwrap(),
            b,
        )
        .await
        .unwrap();
        assert_eq!(client.conn().alpn_protocol(), None);
        let data = pattern(100_000, 3);
        // Write and read at once: the pipe is far smaller than the data.
        let (mut r, mut w) = tokio::io::split(client);
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d2).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut echoed = Vec::new();
        r.read_to_end(&mut echoed).await.unwrap();
        let w = writer.await.unwrap();
        assert_eq!(echoed, data);
        assert_eq!(server.await.unwrap(), data.len());
        client = r.unsplit(w);
        assert_eq!(client.buffered_bytes(), 0);
    }

    /// A client the server's verifier refuses: the error is the rustls error, for metrics.
    #[tokio::test]
    async fn refused_handshake_reports_the_rustls_error() {
        let pki = test_pki();
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(accept(pki.server_config(), a));
        let connector = tokio_rustls::TlsConnector::from(pki.stranger_config());
        let client = connector
            .connect(ServerName::try_from("localhost").unwrap(), b)
            .await;
        let err = server.await.unwrap().unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .expect("a rustls error inside");
        assert!(
            matches!(inner, rustls::Error::InvalidCertificate(_)),
            "{inner:?}"
        );
        // The client learns of it from the alert (TLS 1.3 clients see it on their first read).
        if let Ok(mut c) = client {
            let mut buf = [0u8; 16];
            assert!(c.read(&mut buf).await.is_err());
        }
    }

    /// End of stream in the middle of the handshake or of a record is an error, not EOF.
    #[tokio::test]
    async fn truncated_peers_are_errors() {
        let pki = test_pki();
        let (a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(accept(pki.server_config(), a));
        // A partial ClientHello record header, then EOF.
        b.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
        drop(b);
        let err = server.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // Garbage instead of a ClientHello.
        let (a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(accept(pki.server_config(), a));
        b.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// Found by the `tls_accept` fuzz target: a ClientHello fragmented over records, then
    /// garbage. rustls keeps the fragments' places in the buffer it was given, so the alert
    /// after the error must be fetched with that buffer again (an empty one made it panic).
    #[tokio::test]
    async fn fragmented_hello_then_garbage_is_an_error_not_a_panic() {
        let pki = test_pki();
        let input: [u8; 42] = [
            0x16, 0x03, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x05, 0x14, 0x00,
            0x00, 0x00, 0x00, 0x03, 0x05, 0x14, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x03, 0x05, 0x14, 0x00, 0x00, 0x00, 0x00, 0x03, 0x05, 0x14, 0x00, 0x00, 0x00,
        ];
        for step in [1, 5, 22, 42] {
            let (a, mut b) = tokio::io::duplex(1 << 16);
            let server = tokio::spawn(accept(pki.server_config(), a));
            for chunk in input.chunks(step) {
                // The server may have refused and gone already.
                if b.write_all(chunk).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            drop(b);
            assert!(server.await.expect("no panic").is_err(), "step {step}");
        }
    }

    /// An IO that hands out reads and takes writes in the sizes given, cycling, and makes
    /// every other write wait once: records arrive split anywhere and sends stay partial.
    struct Chunky<IO> {
        io: IO,
        sizes: Vec<usize>,
        at: usize,
        stall: bool,
    }

    impl<IO> Chunky<IO> {
        fn next(&mut self) -> usize {
            self.at += 1;
            self.sizes[self.at % self.sizes.len()].max(1)
        }
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Chunky<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let k = self.next().min(buf.remaining());
            let mut tmp = vec![0u8; k];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            buf.put_slice(rb.filled());
            Poll::Ready(Ok(()))
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Chunky<IO> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let k = self.next().min(buf.len());
            Pin::new(&mut self.io).poll_write(cx, &buf[..k])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the segmentation of the byte stream and however often the socket makes a
        /// write wait, both directions deliver every byte in order, and an idle stream holds
        /// no buffer afterwards.
        #[test]
        fn any_segmentation_delivers_every_byte(
            sizes in proptest::collection::vec(1usize..3000, 1..12),
            up_len in 0usize..70_000,
            down_len in 0usize..70_000,
        ) {
            let pki = test_pki();
            block_on(async move {
                let (a, b) = tokio::io::duplex(64 * 1024);
                let a = Chunky { io: a, sizes: sizes.clone(), at: 0, stall: false };
                let b = Chunky { io: b, sizes, at: 1, stall: true };
                let server = tokio::spawn(accept(pki.server_config(), a));
                let client =
                    connect(pki.client_config(), ServerName::try_from("localhost").unwrap(), b);
                let mut client = client.await.unwrap();
                let mut server = server.await.unwrap().unwrap();
                let up = pattern(up_len, 5);
                let down = pattern(down_len, 9);
                let (u2, d2) = (up.clone(), down.clone());
                let s = tokio::spawn(async move {
                    let mut got = vec![0; u2.len()];
                    server.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, u2);
                    server.write_all(&d2).await.unwrap();
                    server.flush().await.unwrap();
                    server
                });
                client.write_all(&up).await.unwrap();
                client.flush().await.unwrap();
                let mut got = vec![0; down.len()];
                client.read_exact(&mut got).await.unwrap();
                assert_eq!(got, down);
                let server = s.await.unwrap();
                assert_eq!(server.buffered_bytes(), 0);
                assert_eq!(client.buffered_bytes(), 0);
            });
        }

        /// A bit changed on the wire after the handshake is an error on read, never a panic
        /// or wrong data.
        #[test]
        fn tampered_records_are_errors(flip in 0usize..2022, bit in 0u8..8) {
            let pki = test_pki();
            block_on(async move {
                let (a, b) = tokio::io::duplex(64 * 1024);
                let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let a = Tamper { io: a, armed: armed.clone(), seen: 0, flip, bit };
                let server = tokio::spawn(accept(pki.server_config(), a));
                let connector = tokio_rustls::TlsConnector::from(pki.client_config());
                let mut client = connector
                    .connect(ServerName::try_from("localhost").unwrap(), b)
                    .await
                    .unwrap();
                let mut server = server.await.unwrap().unwrap();
                armed.store(true, std::sync::atomic::Ordering::SeqCst);
                // One record of 2,000 bytes (2,022 on the wire), then close_notify and EOF.
                client.write_all(&pattern(2000, 1)).await.unwrap();
                client.shutdown().await.unwrap();
                let mut got = Vec::new();
                let r = server.read_to_end(&mut got).await;
                assert!(r.is_err(), "a tampered record must not decrypt: {r:?}, {} bytes", got.len());
                assert!(got.is_empty());
            });
        }
    }

    /// Flips bit `bit` of the `flip`th byte read once `armed`.
    struct Tamper<IO> {
        io: IO,
        armed: Arc<std::sync::atomic::AtomicBool>,
        seen: usize,
        flip: usize,
        bit: u8,
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Tamper<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
            if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
                let (flip, bit, seen) = (self.flip, self.bit, self.seen);
                let got = &mut buf.filled_mut()[before..];
                if (seen..seen + got.len()).contains(&flip) {
                    got[flip - seen] ^= 1 << bit;
                }
                self.seen += got.len();
            }
            Poll::Ready(Ok(()))
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Tamper<IO> {
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
}
