//! The few byte-level writers the line protocol encoder calls for every line: the
//! 13-digit millisecond timestamp written in two SWAR steps instead of a general integer
//! formatting, and short copies that compile to a few loads and stores instead of a
//! `memcpy` call. They are kept apart from the grammar in `lineproto.rs` because they are
//! pure byte arithmetic, tested against `itoa` and `format!` in that module's tests.

/// Writes the timestamp `ms` in decimal at the start of `dst` and returns its length.
///
/// Every line ends with one, and they are 13-digit milliseconds (from 2001-09-09 to
/// 2286-11-20): those are written as 5 + 8 digits, each group in one go ([`eight_digits`]),
/// at about half the cost of the general integer formatting (`itoa`) that takes the rest.
#[inline(always)]
pub(super) fn write_time(dst: &mut [u8], ms: i64) -> usize {
    if !(1_000_000_000_000..10_000_000_000_000).contains(&ms) {
        return copy_short(dst, itoa::Buffer::new().format(ms).as_bytes());
    }
    let ms = ms as u64; // positive, checked above
    let high = eight_digits((ms / 100_000_000) as u32); // 000ddddd
    dst[..5].copy_from_slice(&high[3..]);
    dst[5..13].copy_from_slice(&eight_digits((ms % 100_000_000) as u32));
    13
}

/// The 8 decimal digits of `x` (below 10^8, zero-padded) as ASCII, computed in the lanes of
/// one 64-bit word (SWAR): the two 4-digit halves, then four 2-digit pairs, then the eight
/// digits, each step a multiply and a shift in place of a division per lane.
#[inline(always)]
pub(super) fn eight_digits(x: u32) -> [u8; 8] {
    let x = u64::from(x);
    // 32-bit lanes, the first digits in the low lane (the first byte, little-endian)
    let fours = (x / 10_000) | ((x % 10_000) << 32);
    // v / 100 for v < 10^4 is v * 10486 >> 20
    let hundreds = ((fours * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let pairs = hundreds | ((fours - hundreds * 100) << 16);
    // v / 10 for v < 100 is v * 103 >> 10
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    let digits = tens | ((pairs - tens * 10) << 8);
    (digits | 0x3030_3030_3030_3030).to_le_bytes()
}

/// Copies `bytes` to the start of `dst` and returns its length. Up to 24 bytes (a float's
/// or an integer's text) are two fixed-size copies that overlap in the middle, which the
/// compiler turns into a few loads and stores instead of a call to `memcpy`.
#[inline(always)]
pub(super) fn copy_short(dst: &mut [u8], bytes: &[u8]) -> usize {
    let n = bytes.len();
    let dst = &mut dst[..n];
    match n {
        16..=24 => {
            dst[..16].copy_from_slice(&bytes[..16]);
            dst[n - 8..].copy_from_slice(&bytes[n - 8..]);
        }
        8..=15 => {
            dst[..8].copy_from_slice(&bytes[..8]);
            dst[n - 8..].copy_from_slice(&bytes[n - 8..]);
        }
        4..=7 => {
            dst[..4].copy_from_slice(&bytes[..4]);
            dst[n - 4..].copy_from_slice(&bytes[n - 4..]);
        }
        // a float such as `0` or `2.5`: three (overlapping) byte copies, not a `memcpy` call
        1..=3 => {
            dst[0] = bytes[0];
            dst[n / 2] = bytes[n / 2];
            dst[n - 1] = bytes[n - 1];
        }
        _ => dst.copy_from_slice(bytes),
    }
    n
}
