//! Typed, checked, allocation-free views of Ethernet, IPv4, IPv6, UDP, RTP and RTCP packets.
//!
//! Every protocol module follows the smoltcp habit: a `Packet<T: AsRef<[u8]>>` view over
//! borrowed or owned bytes, field byte ranges in a private `mod field`, `new_unchecked` for
//! bytes that were already validated, `new_checked` for anything that came from the network,
//! accessors that cannot panic once `new_checked` succeeded, setters on
//! `T: AsRef<[u8]> + AsMut<[u8]>`, and (where it makes sense) a `Repr` value with
//! `parse`/`emit`.
//!
//! Invariants the media pipeline relies on:
//! - No function in this crate allocates, except `Repr` values that own variable-length parts
//!   (`rtp::Repr`), which are never built on the per-packet path.
//! - Nothing panics on untrusted input: malformed bytes yield [`Error`], never a panic.
//! - Setters that rewrite fields covered by a checksum keep that checksum valid with an
//!   RFC 1624 incremental update, so relaying never re-sums a payload.
//! - The crate is sans-IO: no clocks, sockets or environment.

#![forbid(unsafe_code)]

mod bytes;
mod error;

pub mod checksum;
pub mod demux;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod rtcp;
pub mod rtp;
pub mod udp;

pub use demux::{classify, MediaKind};
pub use error::{Error, Result};
pub use ethernet::{parse_l2, EthernetAddress, L2Info};
