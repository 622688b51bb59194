//! The lies of `batch-liar` and `batch-liar-returning`: the failures each tells for a
//! batch, by the type of its first message (see `batch-liar`'s crate docs). Shared by
//! both through `#[path]`, so the two ways of telling failures are tested with the same
//! lies.

/// The failures to tell for a batch of `n` messages, as `(index, reason)`: `first` is
/// the first message's type, `bytes` its `bytes` int field, and `payload(i)` the payload
/// of message `i`.
pub fn lies(n: u32, first: &str, bytes: usize, payload: impl Fn(u32) -> String) -> Vec<(u32, String)> {
    match first {
        "out-of-range" => vec![(n, "past the end".into())],
        "duplicate" => vec![(0, "once".into()), (0, "twice".into())],
        "unsorted" => vec![(n - 1, "last".into()), (0, "first".into())],
        "too-many" => (0..n)
            .flat_map(|i| (0..10).map(move |k| (i, format!("failure {k}"))))
            .collect(),
        "huge" => (0..n).map(|i| (i, "x".repeat(bytes))).collect(),
        "escapes" => (0..n).map(|i| (i, payload(i))).collect(),
        _ => Vec::new(),
    }
}
