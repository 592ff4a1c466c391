//! Variable-length integers: unsigned LEB128 and zigzag-encoded signed values, as used to frame records.
//!
//! Decoders take a byte slice and return the value and the number of bytes consumed, or `None` when the
//! slice ends early or the encoding is longer than a `u64` can hold.

/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as unsigned LEB128.
pub fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded.
pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    put_u64(out, zigzag(value));
}

/// Number of bytes `put_u64(value)` writes.
pub fn len_u64(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Number of bytes `put_i64(value)` writes.
pub fn len_i64(value: i64) -> usize {
    len_u64(zigzag(value))
}

/// Decodes an unsigned LEB128 value from the front of `buf`.
pub fn get_u64(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let low = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return None; // more than 64 bits
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Decodes a zigzag-encoded signed value from the front of `buf`.
pub fn get_i64(buf: &[u8]) -> Option<(i64, usize)> {
    get_u64(buf).map(|(v, n)| (unzigzag(v), n))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u64_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            prop_assert_eq!(out.len(), len_u64(v));
            prop_assert_eq!(get_u64(&out), Some((v, out.len())));
        }

        #[test]
        fn i64_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            prop_assert_eq!(out.len(), len_i64(v));
            prop_assert_eq!(get_i64(&out), Some((v, out.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Some((_, n)) = get_u64(&buf) {
                prop_assert!(n >= 1 && n <= buf.len().min(MAX_VARINT_LEN));
            }
        }
    }

    #[test]
    fn overlong_is_rejected() {
        assert_eq!(get_u64(&[0xff; 10]), None);
        assert_eq!(get_u64(&[0x80; 3]), None);
        assert_eq!(get_u64(&[]), None);
    }
}
