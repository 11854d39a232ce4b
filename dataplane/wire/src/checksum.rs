//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Vocabulary: a *sum* is the one's complement accumulation of 16-bit big-endian words, kept
//! wide (`u32`) so several sums can be added before [`fold`]ing the carries back in; a
//! *checksum* is the complemented fold, as written into a header.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Raw one's complement accumulation of `data` as big-endian 16-bit words (not folded, not
/// complemented). An odd trailing byte is padded with a zero byte, as RFC 1071 requires.
///
/// For inputs up to 64 KiB the result is the exact plain sum of the words (below 2^31). Longer
/// inputs are returned with their carries folded, which [`fold`] treats identically, so the
/// result always stays below 2^31 and a few sums can be added without overflow.
pub fn sum(data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    // u64 cannot overflow here: a slice holds far fewer than 2^48 words.
    let mut acc: u64 = words
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    match u32::try_from(acc) {
        Ok(small) if small < 0x8000_0000 => small,
        _ => u32::from(fold64(acc)),
    }
}

/// Folds the carries of a wide sum back into 16 bits (end-around carry). Not complemented.
pub fn fold(sum: u32) -> u16 {
    fold64(u64::from(sum))
}

fn fold64(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    sum as u16
}

/// The Internet checksum of `data`: `!fold(sum(data))`. A buffer whose checksum field is
/// included verifies when this returns 0.
pub fn data(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Incrementally updates `checksum` after a 16-bit word changed from `old` to `new`, with
/// RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which (unlike equation 2) never turns a
/// valid checksum into the negative-zero form a full recomputation would not produce.
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// Incrementally updates `checksum` after a 32-bit value (two aligned words, for example an
/// IPv4 address) changed from `old` to `new`.
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let removed = u32::from(!(old >> 16) as u16) + u32::from(!old as u16);
    let added = (new >> 16) + (new & 0xffff);
    !fold(u32::from(!checksum) + removed + added)
}

/// Incrementally updates `checksum` after the bytes `old` were replaced by `new` (for example a
/// 16-byte IPv6 address in a UDP pseudo-header).
///
/// Both slices must start at an even offset of the checksummed data and have the same length;
/// the intended use is equal even lengths. Other inputs do not panic, they give the checksum of
/// "remove `old`'s words, add `new`'s words", which is only meaningful under that alignment.
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    // ~fold(sum(old)) is the one's complement negation of old's contribution.
    !fold(u32::from(!checksum) + u32::from(!fold(sum(old))) + u32::from(fold(sum(new))))
}

/// Unfolded sum of the IPv4 pseudo-header (RFC 768): addresses, protocol and the upper-layer
/// length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + u32::from(proto) + u32::from(len)
}

/// Unfolded sum of the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, 32-bit upper-layer
/// length and next header.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, proto: u8, len: u32) -> u32 {
    sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xffff) + u32::from(proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from RFC 1071 section 3.
    const RFC1071: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];

    #[test]
    fn rfc1071_example() {
        assert_eq!(sum(&RFC1071), 0x0001 + 0xf203 + 0xf4f5 + 0xf6f7);
        assert_eq!(fold(sum(&RFC1071)), 0xddf2);
        assert_eq!(data(&RFC1071), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
        assert_eq!(data(&[]), 0xffff);
    }

    #[test]
    fn long_input_stays_small_and_equivalent() {
        let big = [0xffu8; 200_000];
        let s = sum(&big);
        assert!(s < 0x8000_0000);
        assert_eq!(fold(s), 0xffff);
    }

    #[test]
    fn ipv4_header_checksum_known_value() {
        // IPv4 header from the crate's IPv4/UDP/RTP fixture, checksum 0x51f5.
        let mut header = [
            0x45, 0xb8, 0x00, 0x34, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x01, 0x0a, 0x0a, 0x00, 0x00, 0x14,
        ];
        assert_eq!(data(&header), 0x51f5);
        header[10..12].copy_from_slice(&0x51f5u16.to_be_bytes());
        assert_eq!(data(&header), 0);
    }

    #[test]
    fn rfc1624_negative_zero_case() {
        // RFC 1624 section 3: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 must give 0x0000, where
        // equation 2 would yield 0xffff.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update32_matches_two_update16() {
        let c = 0x1234;
        let (old, new) = (0xc0a8_010a_u32, 0x0a00_0014_u32);
        let stepwise = update16(update16(c, 0xc0a8, 0x0a00), 0x010a, 0x0014);
        assert_eq!(update32(c, old, new), stepwise);
        assert_eq!(
            update_bytes(c, &old.to_be_bytes(), &new.to_be_bytes()),
            stepwise
        );
    }

    #[test]
    fn pseudo_headers() {
        let v4 = pseudo_header_v4(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), 17, 9);
        assert_eq!(v4, 0x0102 + 0x0304 + 0x0506 + 0x0708 + 17 + 9);
        let a = Ipv6Addr::new(1, 2, 3, 4, 5, 6, 7, 8);
        let b = Ipv6Addr::new(0xffff, 0, 0, 0, 0, 0, 0, 1);
        let v6 = pseudo_header_v6(&a, &b, 17, 0x0001_0002);
        assert_eq!(v6, 36 + 0xffff + 1 + 1 + 2 + 17);
    }
}
