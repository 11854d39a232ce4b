//! Which consecutive transmissions share one `sendmsg` (UDP generic segmentation offload).
//!
//! With `UDP_SEGMENT` the kernel walks the socket, route and netfilter once for a whole batch and
//! splits it into datagrams late (in the driver or at the GSO layer), which is where most of the
//! per-packet kernel cost goes away. The kernel's rules decide the grouping: one socket, one
//! destination, every segment the same size except a shorter last one, at most
//! [`MAX_SEGMENTS`] segments and [`MAX_BATCH_BYTES`] bytes, and each segment must fit the path
//! MTU (a segment the kernel would have to IP-fragment makes the whole batch fail).

use std::net::SocketAddr;

use popmesh_media::backend::Tx;

/// Segments per `sendmsg` (the kernel's `UDP_MAX_SEGMENTS` on older kernels; newer allow more).
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Payload bytes per `sendmsg`: the largest IPv4 UDP payload (65535 - 20 - 8).
pub(crate) const MAX_BATCH_BYTES: usize = 65_507;

/// Largest segment we coalesce: a full IPv4 datagram on a 1500-byte MTU (1500 - 20 - 8).
/// Larger datagrams are sent one by one and left to IP fragmentation as without GSO.
const MAX_SEGMENT_V4: usize = 1_472;

/// Same for IPv6 (1500 - 40 - 8).
const MAX_SEGMENT_V6: usize = 1_452;

/// Largest segment size that may be coalesced towards `dst`.
pub(crate) fn max_segment(dst: &SocketAddr) -> usize {
    match dst {
        SocketAddr::V4(_) => MAX_SEGMENT_V4,
        SocketAddr::V6(_) => MAX_SEGMENT_V6,
    }
}

/// How many transmissions from the start of `tx` go into one `sendmsg`.
///
/// `tx[0]` must already be validated. `len_of(pkt)` gives the payload length of a packet index,
/// or `None` for an index out of range (which ends the run; the caller then rejects it on its
/// own). With `gso` false every transmission is its own `sendmsg`. Returns 0 only for an empty
/// `tx`.
pub(crate) fn run_len(tx: &[Tx], gso: bool, len_of: impl Fn(u16) -> Option<usize>) -> usize {
    let Some(first) = tx.first() else {
        return 0;
    };
    let Some(segment) = len_of(first.pkt) else {
        return 1;
    };
    if !gso || segment == 0 || segment > max_segment(&first.dst) {
        return 1;
    }
    let mut n = 1;
    let mut total = segment;
    for next in tx.iter().skip(1) {
        if n == MAX_SEGMENTS || next.port != first.port || next.dst != first.dst {
            break;
        }
        let Some(len) = len_of(next.pkt) else {
            break;
        };
        if len == 0 || len > segment || total + len > MAX_BATCH_BYTES {
            break;
        }
        n += 1;
        total += len;
        if len < segment {
            // Only the last segment may be short.
            break;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(pkt: u16, port: u16, dst: &str) -> Tx {
        Tx {
            pkt,
            port,
            dst: dst.parse().expect("literal"),
        }
    }

    fn lens(l: &[usize]) -> impl Fn(u16) -> Option<usize> + '_ {
        move |i| l.get(usize::from(i)).copied()
    }

    const A: &str = "192.0.2.1:5000";
    const B: &str = "192.0.2.2:5000";

    #[test]
    fn equal_sizes_to_one_destination_coalesce() {
        let t = [tx(0, 0, A), tx(1, 0, A), tx(2, 0, A)];
        assert_eq!(run_len(&t, true, lens(&[100, 100, 100])), 3);
        assert_eq!(run_len(&t, false, lens(&[100, 100, 100])), 1);
    }

    #[test]
    fn short_segment_ends_the_run_and_larger_one_is_excluded() {
        let t = [tx(0, 0, A), tx(1, 0, A), tx(2, 0, A)];
        assert_eq!(run_len(&t, true, lens(&[100, 60, 100])), 2);
        assert_eq!(run_len(&t, true, lens(&[60, 100, 100])), 1);
    }

    #[test]
    fn port_or_destination_change_ends_the_run() {
        let t = [tx(0, 0, A), tx(0, 0, B)];
        assert_eq!(run_len(&t, true, lens(&[100])), 1);
        let t = [tx(0, 0, A), tx(0, 1, A)];
        assert_eq!(run_len(&t, true, lens(&[100])), 1);
    }

    #[test]
    fn fan_out_of_one_packet_to_one_destination_coalesces() {
        let t = [tx(0, 0, A), tx(0, 0, A)];
        assert_eq!(run_len(&t, true, lens(&[500])), 2);
    }

    #[test]
    fn limits_cap_the_run() {
        let t: Vec<Tx> = (0..100).map(|_| tx(0, 0, A)).collect();
        assert_eq!(run_len(&t, true, lens(&[10])), MAX_SEGMENTS);
        assert_eq!(run_len(&t, true, lens(&[1400])), MAX_BATCH_BYTES / 1400);
        assert_eq!(
            run_len(&t, true, lens(&[1473])),
            1,
            "above the v4 MTU payload"
        );
        assert_eq!(
            run_len(&t, true, lens(&[0])),
            1,
            "empty datagrams are sent alone"
        );
    }

    #[test]
    fn bad_index_ends_the_run() {
        let t = [tx(0, 0, A), tx(9, 0, A)];
        assert_eq!(run_len(&t, true, lens(&[100])), 1);
        assert_eq!(run_len(&[], true, lens(&[])), 0);
    }
}
