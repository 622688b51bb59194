//! The loader on arbitrary bytes as a `.wasm`: sniffing, compiling, checking against the
//! world, instantiating under tight limits. Never panics; a load that succeeds serves a
//! call or fails it with a typed error.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use corral::{Host, Limits, Message, PluginOptions};
use libfuzzer_sys::fuzz_target;

static HOST: LazyLock<Host> = LazyLock::new(|| Host::new().expect("host starts"));

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        fuel: 1_000_000,
        deadline: Duration::from_millis(200),
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    if let Ok(plugin) = HOST.load("fuzz", data, PluginOptions::with_limits(limits)) {
        let _ = plugin.process_message(&Message::new("fuzz"));
        let _ = plugin.timer_event(0);
    }
});
