//! Tuning knobs of one backend instance.

use crate::addr;
use crate::error::OpenError;

/// Bytes at the front of every ring buffer that are not payload: the kernel's
/// `io_uring_recvmsg_out` header, room for a `sockaddr_in6` and the control messages
/// (packet info and drop counter). A datagram larger than `buffer_size - BUFFER_HEADROOM` is
/// counted as truncated and dropped.
pub const BUFFER_HEADROOM: u32 = 16 + addr::SOCKADDR_V6_LEN + addr::RECV_CONTROL_LEN as u32;

/// Most entries an io_uring queue or a provided-buffer ring may have (`IORING_MAX_ENTRIES`).
const MAX_RING_ENTRIES: u32 = 32_768;

/// Largest buffer that makes sense: a maximal UDP payload plus headroom, rounded up.
const MAX_BUFFER_SIZE: u32 = 128 * 1024;

/// Smallest buffer we accept (a few hundred payload bytes).
const MIN_BUFFER_SIZE: u32 = 256;

/// Raw parameters of an [`UringBackend`](crate::UringBackend); checked by
/// [`UringBackend::open`](crate::UringBackend::open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringParams {
    /// Submission queue entries (1..=32768). Also the number of send slots, i.e. how many
    /// `sendmsg` operations may be in flight at once; the completion queue is sized so it never
    /// overflows.
    pub ring_entries: u32,
    /// Receive buffers shared by all sockets of this worker (a power of two, 1..=32768). Every
    /// packet the pipeline holds or the kernel is still sending pins one.
    pub buffers: u16,
    /// Bytes per receive buffer including [`BUFFER_HEADROOM`] (256..=131072).
    pub buffer_size: u32,
    /// Coalesce consecutive sends to one destination with UDP GSO (`UDP_SEGMENT`).
    pub gso: bool,
    /// `SO_RCVBUF` per socket (0 keeps the kernel default). Tried with `SO_RCVBUFFORCE` first so
    /// a privileged worker is not capped by `net.core.rmem_max`.
    pub rcvbuf_bytes: usize,
    /// `SO_SNDBUF` per socket (0 keeps the kernel default), `SO_SNDBUFFORCE` first likewise.
    pub sndbuf_bytes: usize,
}

impl Default for UringParams {
    /// 1024 SQEs, 4096 buffers of 2 KiB (8 MiB per worker, 1940-byte payloads: any datagram on a
    /// 1500-byte MTU), GSO on, 4 MiB socket buffers (about 3000 full-size datagrams of burst
    /// tolerance per socket).
    fn default() -> Self {
        UringParams {
            ring_entries: 1024,
            buffers: 4096,
            buffer_size: 2048,
            gso: true,
            rcvbuf_bytes: 4 << 20,
            sndbuf_bytes: 4 << 20,
        }
    }
}

impl UringParams {
    /// Largest datagram payload a receive buffer holds on any socket (IPv4 sockets fit 12
    /// bytes more, their `sockaddr` being smaller).
    pub fn max_payload(&self) -> usize {
        self.buffer_size.saturating_sub(BUFFER_HEADROOM) as usize
    }

    pub(crate) fn check(&self) -> Result<(), OpenError> {
        let bad = |field, value: u64, rule| Err(OpenError::InvalidParams { field, value, rule });
        if self.ring_entries == 0 || self.ring_entries > MAX_RING_ENTRIES {
            return bad(
                "ring_entries",
                self.ring_entries.into(),
                "must be in 1..=32768",
            );
        }
        if !self.buffers.is_power_of_two() || u32::from(self.buffers) > MAX_RING_ENTRIES {
            return bad(
                "buffers",
                self.buffers.into(),
                "must be a power of two in 1..=32768",
            );
        }
        if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&self.buffer_size) {
            return bad(
                "buffer_size",
                self.buffer_size.into(),
                "must be in 256..=131072",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_holds_a_full_mtu_datagram() {
        let p = UringParams::default();
        assert!(p.check().is_ok());
        assert!(p.max_payload() >= 1472);
    }

    #[test]
    fn bad_values_name_the_field() {
        let p = UringParams {
            buffers: 1000,
            ..UringParams::default()
        };
        let msg = p.check().expect_err("not a power of two").to_string();
        assert!(msg.contains("buffers") && msg.contains("1000"), "{msg}");
        let p = UringParams {
            ring_entries: 0,
            ..UringParams::default()
        };
        assert!(p.check().is_err());
        let p = UringParams {
            buffer_size: 64,
            ..UringParams::default()
        };
        assert!(p.check().is_err());
    }
}
