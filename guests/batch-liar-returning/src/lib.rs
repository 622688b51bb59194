//! Hostile plugin: `batch-liar`'s lies, told as a `batch-filter` plugin built before the
//! `failures` interface told its failures: returned from `process-batch` as a
//! `list<batch-failure>`. The host still calls such a plugin that way, and holds the
//! returned list to the same rules (`tests/all/integrity.rs`). `timer-event` answers at
//! once.

wit_bindgen::generate!({
    inline: "
        package acme:legacy;

        world batch-filter-returning {
            use corral:plugin/types@0.1.0.{message-batch, batch-failure, failure};

            export process-batch: func(batch: message-batch) -> list<batch-failure>;
            export timer-event: func(now-ns: s64) -> result<_, failure>;
        }
    ",
    path: "../../wit",
    generate_all,
});

#[path = "../../batch-liar/src/lies.rs"]
mod lies;

struct Liar;

/// The little-endian u64 at `at`, 0 past the end.
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// The text a span (`offset << 32 | length`) names, empty if it lies outside.
fn text(bytes: &[u8], span: u64) -> String {
    let (at, len) = ((span >> 32) as usize, (span & 0xffff_ffff) as usize);
    String::from_utf8_lossy(bytes.get(at..at.saturating_add(len)).unwrap_or(&[])).into_owned()
}

impl Guest for Liar {
    fn process_batch(batch: Vec<u8>) -> Vec<BatchFailure> {
        // The `message-batch` layout of `wit/plugin.wit`: a header, six numbers per
        // message (the type's span third, the payload's fifth, the fields' place last),
        // three per field.
        let n = word(&batch, 0) as usize;
        if n == 0 {
            return Vec::new();
        }
        let message = |i: usize, k: usize| word(&batch, 16 + 48 * i + 8 * k);
        let fields_at = 16 + 48 * n;
        let where_ = message(0, 5);
        let (first_field, count) = ((where_ >> 32) as usize, (where_ & 0xffff_ffff) as usize);
        let bytes = (first_field..first_field + count)
            .map(|f| fields_at + 24 * f)
            .find(|&at| text(&batch, word(&batch, at)) == "bytes")
            .map_or(0, |at| word(&batch, at + 16) as usize);
        let payload = |i: u32| text(&batch, message(i as usize, 4));
        lies::lies(n as u32, &text(&batch, message(0, 2)), bytes, payload)
            .into_iter()
            .map(|(index, reason)| BatchFailure {
                index,
                failure: Failure::NonFatal(reason),
            })
            .collect()
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

export!(Liar);
