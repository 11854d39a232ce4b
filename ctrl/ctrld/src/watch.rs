//! Appliance watch streams (xDS-like).
//!
//! On connect the appliance gets a full [`pb::ConfigSnapshot`] of its config at the current
//! version. After that, each committed change that concerns it is pushed as soon as it is
//! committed: a [`pb::ConfigDelta`] (session upserts and removals on top of `base_version`, the
//! version sent before on this stream) when only its sessions changed, a snapshot when a mesh
//! resource (service, route, canary, policy) changed, after a NACK, or when the stream fell more
//! than the change feed's depth behind. Changes to other appliances' sessions are not sent.
//!
//! Every update carries a version and a nonce; the appliance answers with an Ack or a Nack
//! (with reasons per resource), which become its status. Push latency is the time from the
//! commit of a version to its ACK.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use popmesh_ctrl_api::pb::{self, config_update::Body, watch_request};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::core::{unix_ms, Core};
use crate::state::{Change, SessionOp};

/// The server half of a watch stream.
pub type UpdateStream = ReceiverStream<Result<pb::ConfigUpdate, Status>>;

/// Updates buffered towards one appliance before the stream task waits for it.
const SEND_BUFFER: usize = 4;

/// Starts serving one appliance's watch stream on a task of its own.
pub fn start(
    core: Arc<Core>,
    appliance: String,
    inbound: Streaming<pb::WatchRequest>,
) -> UpdateStream {
    let (tx, rx) = mpsc::channel(SEND_BUFFER);
    tokio::spawn(async move {
        let mut w = Watch {
            changes: core.subscribe(),
            core,
            appliance,
            tx,
            sent: 0,
            nonce: 0,
            unacked: VecDeque::new(),
            needs_snapshot: false,
        };
        w.connected();
        let reason = w.run(inbound).await;
        w.disconnected(&reason);
    });
    ReceiverStream::new(rx)
}

struct Watch {
    core: Arc<Core>,
    appliance: String,
    changes: broadcast::Receiver<Arc<Change>>,
    tx: mpsc::Sender<Result<pb::ConfigUpdate, Status>>,
    /// Last version sent.
    sent: u64,
    nonce: u64,
    /// Versions sent and not acknowledged yet, with when they were committed.
    unacked: VecDeque<(u64, Instant)>,
    needs_snapshot: bool,
}

impl Watch {
    fn connected(&self) {
        self.core.with_runtime(&self.appliance, |rt| {
            rt.streams += 1;
            rt.disconnected_since_ms = 0;
        });
        self.core.metrics.connected_appliances.inc();
        tracing::info!(appliance = %self.appliance, "watch stream opened");
    }

    fn disconnected(&self, reason: &str) {
        self.core.with_runtime(&self.appliance, |rt| {
            rt.streams = rt.streams.saturating_sub(1);
            if rt.streams == 0 {
                rt.disconnected_since_ms = unix_ms(SystemTime::now());
            }
        });
        self.core.metrics.connected_appliances.dec();
        tracing::info!(appliance = %self.appliance, reason, "watch stream closed");
    }

    async fn run(&mut self, mut inbound: Streaming<pb::WatchRequest>) -> String {
        if self.send_snapshot(Instant::now()).await.is_err() {
            return "closed before the snapshot was sent".into();
        }
        let mut stopping = self.core.stopping();
        if *stopping.borrow_and_update() {
            return "daemon stopping".into();
        }
        loop {
            tokio::select! {
                // The value only ever goes false -> true, so any wake-up means stop.
                _ = stopping.changed() => {
                    // Dropping the sender ends the response stream; the appliance reconnects
                    // to the next daemon and gets a snapshot there.
                    return "daemon stopping".into();
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.handle(m),
                    Ok(None) => return "appliance closed the stream".into(),
                    Err(e) => return format!("stream error: {e}"),
                },
                change = self.changes.recv() => {
                    let sent = match change {
                        Ok(c) => self.push(&c).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(appliance = %self.appliance, skipped = n,
                                "watch stream fell behind the change feed; sending a snapshot");
                            self.send_snapshot(Instant::now()).await
                        }
                        Err(broadcast::error::RecvError::Closed) => return "daemon stopping".into(),
                    };
                    if sent.is_err() {
                        return "appliance went away".into();
                    }
                }
            }
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    async fn send(&mut self, version: u64, body: Body, committed_at: Instant) -> Result<(), ()> {
        let nonce = self.next_nonce();
        let update = pb::ConfigUpdate {
            version,
            nonce,
            body: Some(body),
        };
        self.tx.send(Ok(update)).await.map_err(|_| ())?;
        self.sent = version;
        self.unacked.push_back((version, committed_at));
        self.core
            .with_runtime(&self.appliance, |rt| rt.sent_version = version);
        Ok(())
    }

    async fn send_snapshot(&mut self, committed_at: Instant) -> Result<(), ()> {
        let (version, snapshot) = {
            let st = self.core.state();
            (
                st.version,
                st.snapshot(&self.appliance, self.core.trust_bundle()),
            )
        };
        self.needs_snapshot = false;
        self.send(version, Body::Snapshot(snapshot), committed_at)
            .await
    }

    async fn push(&mut self, c: &Change) -> Result<(), ()> {
        if c.version <= self.sent {
            // Already in a snapshot sent after this change was committed.
            return Ok(());
        }
        let ops = c.sessions.get(&self.appliance);
        if !c.mesh && ops.is_none() {
            return Ok(());
        }
        if c.mesh || self.needs_snapshot {
            return self.send_snapshot(c.committed_at).await;
        }
        let mut delta = pb::ConfigDelta {
            base_version: self.sent,
            ..Default::default()
        };
        for op in ops.into_iter().flatten() {
            match op {
                SessionOp::Upsert(s) => delta.upserts.push(s.as_ref().clone()),
                SessionOp::Remove(n) => delta.removes.push(n.clone()),
            }
        }
        self.send(c.version, Body::Delta(delta), c.committed_at)
            .await
    }

    fn handle(&mut self, m: pb::WatchRequest) {
        match m.body {
            Some(watch_request::Body::Ack(a)) => {
                if a.version > self.sent {
                    tracing::warn!(appliance = %self.appliance, version = a.version, sent = self.sent,
                        "ACK of a version never sent; ignored");
                    return;
                }
                while let Some(&(v, at)) = self.unacked.front() {
                    if v > a.version {
                        break;
                    }
                    self.core
                        .metrics
                        .push_latency
                        .observe(at.elapsed().as_secs_f64());
                    self.unacked.pop_front();
                }
                self.core.with_runtime(&self.appliance, |rt| {
                    rt.acked_version = rt.acked_version.max(a.version);
                    if rt
                        .last_nack
                        .as_ref()
                        .is_some_and(|n| n.version <= a.version)
                    {
                        rt.last_nack = None;
                    }
                });
                tracing::debug!(appliance = %self.appliance, version = a.version, "ACK");
            }
            Some(watch_request::Body::Nack(n)) => {
                self.unacked.retain(|(v, _)| *v != n.version);
                self.needs_snapshot = true;
                self.core.metrics.nacks.inc();
                tracing::warn!(appliance = %self.appliance, version = n.version, reason = %n.reason,
                    errors = n.errors.len(), "NACK: appliance refused a config version");
                self.core
                    .with_runtime(&self.appliance, |rt| rt.last_nack = Some(n));
            }
            Some(watch_request::Body::Stats(s)) => {
                self.core
                    .report_stats(&self.appliance, s, SystemTime::now());
            }
            None => {}
        }
    }
}
