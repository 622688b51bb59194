//! `memcmp` a word at a time, in place of wasi-libc's.
//!
//! Rust compares strings and byte slices by order (`Ord for str`: a `BTreeMap<String, _>`
//! look-up, a sort, a binary search) through `memcmp`, which for wasm32-wasip2 is
//! wasi-libc's loop over one byte at a time. Under the host's fuel and epoch metering
//! every iteration of a loop pays a fuel check and an epoch check, and every call the
//! entry checks of a function, so the bench's filter, counting messages per type in a
//! `BTreeMap`, spent a third of its instructions per message in `memcmp` in batches of 64
//! (BENCHMARKS.md). This one compares eight bytes at a step, without a loop up to 16,
//! and four, then one, below eight; a guest built with the SDK links it in place of wasi-libc's (the archive's
//! member is only linked for a symbol nothing else defines).

/// `memcmp` (C's): the sign of the first byte that differs, as unsigned bytes.
///
/// # Safety
///
/// `a` and `b` are valid for reads of `n` bytes.
#[inline]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: every read is of bytes below `n`.
    unsafe {
        let word = |p: *const u8, at: usize| u64::from_le((p.add(at) as *const u64).read_unaligned());
        let half = |p: *const u8, at: usize| u32::from_le((p.add(at) as *const u32).read_unaligned());
        if n >= 8 {
            // Every word but the last two, then those two: no loop at all (and so no
            // check of the loop's fuel and epoch) up to 16 bytes, the length of most
            // names and types.
            let mut at = 0;
            while at + 16 < n {
                let (x, y) = (word(a, at), word(b, at));
                if x != y {
                    return first_difference(x, y);
                }
                at += 8;
            }
            let (x, y) = (word(a, at), word(b, at));
            if x != y {
                return first_difference(x, y);
            }
            // The last word, overlapping the one before: its bytes before `at + 8` are
            // equal.
            return first_difference(word(a, n - 8), word(b, n - 8));
        }
        if n >= 4 {
            let (x, y) = (half(a, 0), half(b, 0));
            if x != y {
                return first_difference(x.into(), y.into());
            }
            return first_difference(half(a, n - 4).into(), half(b, n - 4).into());
        }
        for at in 0..n {
            let (x, y) = (*a.add(at), *b.add(at));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
        }
        0
    }
}

/// The sign of the first byte (the lowest, little-endian) that differs in `x` and `y`.
#[inline]
fn first_difference(x: u64, y: u64) -> i32 {
    if x == y {
        return 0;
    }
    let shift = (x ^ y).trailing_zeros() & !7;
    i32::from((x >> shift) as u8) - i32::from((y >> shift) as u8)
}

/// C's `memcmp`, for every caller in the guest: Rust's slice and string comparisons,
/// and any C the guest links.
///
/// # Safety
///
/// As C's: `a` and `b` are valid for reads of `n` bytes.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's, as above.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::compare;

    /// The answer of `memcmp` by its definition: the difference of the first differing
    /// bytes, as unsigned.
    fn reference(a: &[u8], b: &[u8]) -> i32 {
        a.iter()
            .zip(b)
            .find(|(x, y)| x != y)
            .map_or(0, |(&x, &y)| i32::from(x) - i32::from(y))
    }

    #[test]
    fn compare_answers_as_memcmp_for_every_length_and_every_differing_byte() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37).wrapping_add(128)).collect();
        for n in 0..=base.len() {
            let a = &base[..n];
            // SAFETY: both are `n` bytes long.
            assert_eq!(
                unsafe { compare(a.as_ptr(), a.to_vec().as_ptr(), n) },
                0,
                "{n} bytes"
            );
            for at in 0..n {
                for change in [1u8, 0x80, 0xff] {
                    let mut b = a.to_vec();
                    b[at] = b[at].wrapping_add(change);
                    // A later byte differing too must not change the answer.
                    if at + 1 < n {
                        b[n - 1] ^= 0x55;
                    }
                    // SAFETY: both are `n` bytes long.
                    let (ab, ba) = unsafe {
                        (
                            compare(a.as_ptr(), b.as_ptr(), n),
                            compare(b.as_ptr(), a.as_ptr(), n),
                        )
                    };
                    assert_eq!(ab, reference(a, &b), "{n} bytes, byte {at} + {change}");
                    assert_eq!(ba, -ab);
                }
            }
        }
    }

    #[test]
    fn strings_order_as_they_would_with_libc() {
        let mut words = [
            "nginx.access",
            "nginx.error",
            "app",
            "app.request",
            "db.slow",
            "db",
            "",
            "ü",
            "z",
        ];
        let mut by_compare = words;
        words.sort();
        by_compare.sort_by(|a, b| {
            let n = a.len().min(b.len());
            // SAFETY: both hold at least `n` bytes.
            let first = unsafe { compare(a.as_ptr(), b.as_ptr(), n) };
            first.cmp(&0).then(a.len().cmp(&b.len()))
        });
        assert_eq!(by_compare, words);
    }
}
