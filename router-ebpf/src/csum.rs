//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Values are 16-bit words exactly as loaded from the packet (native order of wire bytes): the
//! one's-complement sum is byte-order independent, so no swapping is needed as long as words
//! are stored back the same way.

/// Folds a 64-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit field changing from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// [`replace16`] for a 32-bit field (two words).
#[inline(always)]
pub fn replace32(check: u16, old: u32, new: u32) -> u16 {
    let sum = u64::from(!check)
        + u64::from(!(old as u16))
        + u64::from(!((old >> 16) as u16))
        + u64::from(new as u16)
        + u64::from((new >> 16) as u16);
    !fold(sum)
}
