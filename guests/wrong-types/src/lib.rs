//! Bad file for the tests: exports `process-batch` and `timer-event`, the names of the
//! `batch-filter` world's entry points, with other types than the world's.

wit_bindgen::generate!({
    inline: "
        package acme:wrong;

        world wrong {
            export process-batch: func(count: u32) -> u64;
            export timer-event: func(now-ns: string);
        }
    ",
});

struct Wrong;

impl Guest for Wrong {
    fn process_batch(count: u32) -> u64 {
        u64::from(count)
    }

    fn timer_event(_now_ns: String) {}
}

export!(Wrong);
