//! Test plugin: Corral's `filter` world plus exports of its own, which an embedder calls
//! by name (`Plugin::call_export`, `Plugin::call_export_dynamic`, `corral call --invoke`).
//!
//! - **add(a, b)**: `a + b`, wrapping;
//! - **describe(p)**: a record and a list in, a string out: `"<name>: <n> tags"`;
//! - **calls()**: how many times `calls` was called in this instance (from 1), so a test
//!   sees a fresh instance after a trap;
//! - **crash(message)**: panics with `message`;
//! - **spin()**: loops until a limit stops it;
//! - **checked(n)**: `ok(n * 2)` for `n` under 100, else `err("too big: n")`;
//! - **process-message** and **timer-event**: nothing.

wit_bindgen::generate!({
    inline: "
        package acme:custom;

        world custom {
            include corral:plugin/filter@0.1.0;

            record point {
                name: string,
                tags: list<string>,
            }

            export add: func(a: s32, b: s32) -> s32;
            export describe: func(p: point) -> string;
            export calls: func() -> u64;
            export crash: func(message: string);
            export spin: func();
            export checked: func(n: u32) -> result<u32, string>;
        }
    ",
    path: "../../wit",
    generate_all,
});

use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Custom;

impl Guest for Custom {
    fn process_message(_message: &Message) -> Result<(), Failure> {
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }

    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn describe(p: Point) -> String {
        format!("{}: {} tags", p.name, p.tags.len())
    }

    fn calls() -> u64 {
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn crash(message: String) {
        panic!("{message}");
    }

    fn spin() {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn checked(n: u32) -> Result<u32, String> {
        if n < 100 {
            Ok(n * 2)
        } else {
            Err(format!("too big: {n}"))
        }
    }
}

export!(Custom);
