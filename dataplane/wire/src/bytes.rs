//! Big-endian field access shared by the packet views.
//!
//! The helpers index directly: every caller either runs after the view's `check_len` proved the
//! range is inside the buffer, or sits behind an explicit bounds check of its own. That keeps the
//! accessors branch-free on the hot path.

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;

#[inline]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline]
pub(crate) fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Reads a `u16` if it lies inside `data`; used where no earlier check covers the offset.
#[inline]
pub(crate) fn get_u16(data: &[u8], at: usize) -> Option<u16> {
    match data.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Reads a `u32` if it lies inside `data`; used where no earlier check covers the offset.
#[inline]
pub(crate) fn get_u32(data: &[u8], at: usize) -> Option<u32> {
    match data.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}
