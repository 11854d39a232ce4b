//! Copying both ways between two streams (upgraded WebSockets, TCP pass-through) without a
//! buffer per stream.
//!
//! `tokio::io::copy_bidirectional` gives every stream two heap buffers for its whole life, so
//! an idle WebSocket pays for them while it carries nothing. Here each poll reads into a
//! scratch buffer on the stack and writes it on at once; only bytes the writer could not take
//! yet are kept on the heap, and released when they are written. An idle stream holds no copy
//! buffer at all.
//!
//! Semantics follow `copy_bidirectional`: when one side reaches end of file the other side's
//! writer is flushed and shut down and the other direction goes on; the future ends when both
//! directions have, or at the first error.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Stack scratch per poll: one TLS record's worth of plaintext.
const SCRATCH: usize = 16 * 1024;

/// Bytes moved each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Copying,
    ShuttingDown,
    Done,
}

/// One direction: what the writer has not taken yet, and where it stands.
#[derive(Debug)]
struct Half {
    held: Vec<u8>,
    pos: usize,
    state: State,
    moved: u64,
}

impl Half {
    fn new() -> Half {
        Half {
            held: Vec::new(),
            pos: 0,
            state: State::Copying,
            moved: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        scratch: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    ready!(Pin::new(&mut *w).poll_flush(cx))?;
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                    self.state = State::Done;
                }
                State::Copying => {
                    while self.pos < self.held.len() {
                        let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.held[self.pos..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        self.pos += n;
                        self.moved += n as u64;
                    }
                    if self.pos > 0 {
                        // Give the heap back: an idle stream holds nothing.
                        self.held = Vec::new();
                        self.pos = 0;
                    }
                    let mut buf = ReadBuf::uninit(&mut *scratch);
                    match Pin::new(&mut *r).poll_read(cx, &mut buf) {
                        Poll::Pending => {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let data = buf.filled();
                    if data.is_empty() {
                        self.state = State::ShuttingDown;
                        continue;
                    }
                    let mut off = 0;
                    while off < data.len() {
                        match Pin::new(&mut *w).poll_write(cx, &data[off..]) {
                            Poll::Ready(Ok(0)) => {
                                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                            }
                            Poll::Ready(Ok(n)) => {
                                off += n;
                                self.moved += n as u64;
                            }
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => {
                                self.held = data[off..].to_vec();
                                self.pos = 0;
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both reach end of file (each end's writer is shut
/// down after its reader ends) or either side fails.
///
/// # Errors
/// The first read, write, flush or shutdown error of either side.
pub async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<Moved>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Half::new();
    let mut b_to_a = Half::new();
    poll_fn(|cx| {
        // Uninitialised: nothing is zeroed per poll.
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
        let ab = a_to_b.poll_copy(cx, a, b, &mut scratch)?;
        let ba = b_to_a.poll_copy(cx, b, a, &mut scratch)?;
        match (ab, ba) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(Moved {
                a_to_b: a_to_b.moved,
                b_to_a: b_to_a.moved,
            })),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn moves_both_ways_and_propagates_end_of_file() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { copy_both(&mut a, &mut b).await });

        // More than both duplex buffers and the scratch: the writer pushes back, bytes are held.
        let up: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let writer = tokio::spawn(async move {
            client.write_all(&up2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got_up = Vec::new();
        server.read_to_end(&mut got_up).await.unwrap();
        assert_eq!(got_up, up);
        server.write_all(&down2).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), down);
        let moved = relay.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Moved {
                a_to_b: up.len() as u64,
                b_to_a: down.len() as u64
            }
        );
    }

    #[tokio::test]
    async fn a_peer_that_goes_away_ends_the_copy_with_an_error() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (b_peer, mut b) = tokio::io::duplex(64);
        drop(b_peer);
        client.write_all(b"hello").await.unwrap();
        let r = copy_both(&mut a, &mut b).await;
        assert!(r.is_err(), "{r:?}");
    }
}
