//! Decimal numbers appended to a record's buffer without a call per digit or per copy:
//! the event writer ([`super::json`]) and the timestamps ([`super::time`]) run for every
//! record.

/// A number's decimal digits, in words of eight built in a register (see [`digits8`]).
#[inline]
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    const E8: u64 = 100_000_000;
    // Each part is below 10^8, so the casts keep every bit.
    if v < 10 {
        // Most counts in a record (SYNs, retransmits, the schema version) are one digit.
        out.push(b'0' + v as u8);
    } else if v < E8 {
        put_leading(out, v as u32);
    } else if v < E8 * E8 {
        put_leading(out, (v / E8) as u32);
        put_eight(out, (v % E8) as u32);
    } else {
        put_leading(out, (v / (E8 * E8)) as u32);
        put_eight(out, (v / E8 % E8) as u32);
        put_eight(out, (v % E8) as u32);
    }
}

/// The eight decimal digits of `v` (below 10^8, zero-padded), as the bytes of a
/// little-endian word, highest digit first.
///
/// Built in a register and stored at once, not byte by byte into a buffer that is then
/// copied: that copy waited on the narrow stores before it (a failed store-to-load
/// forward), and the waits cost more than the formatting. A copy of constant length is
/// also a few inlined moves, where one of variable length is a call to `memcpy`. The
/// digits are split in lanes of one word (SIMD within a register): the two halves of
/// four digits, then pairs, then single digits, each step one multiply for all lanes.
#[inline]
pub fn digits8(v: u32) -> u64 {
    let v = u64::from(v);
    // Lanes of 32 bits: the high four digits in the low lane (it is written first).
    let fours = (v / 10_000) | ((v % 10_000) << 32);
    // x / 100 as (x * 10486) >> 20, exact below 10^4; lanes of 16 bits.
    let hundreds = ((fours * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let pairs = hundreds | ((fours - 100 * hundreds) << 16);
    // x / 10 as (x * 103) >> 10, exact below 100; lanes of 8 bits.
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    let digits = tens | ((pairs - 10 * tens) << 8);
    digits | 0x3030_3030_3030_3030
}

/// `v` (below 10^8) without leading zeros: the word is appended whole, then cut.
#[inline]
fn put_leading(out: &mut Vec<u8>, v: u32) {
    let word = digits8(v);
    // Leading zeros are the low bytes whose digit is 0; at least one digit stays.
    let zeros = ((word & 0x0F0F_0F0F_0F0F_0F0F).trailing_zeros() / 8).min(7) as usize;
    let start = out.len();
    out.extend_from_slice(&(word >> (8 * zeros)).to_le_bytes());
    out.truncate(start + 8 - zeros);
}

/// `v` (below 10^8) as exactly eight digits.
#[inline]
pub fn put_eight(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&digits8(v).to_le_bytes());
}
