//! The sidecar parser on arbitrary text: never panics, and what it accepts is usable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sidecar) = corral::Sidecar::parse(text) {
        assert!(sidecar.options.limits.max_consecutive_failures >= 1);
        if let Some(matcher) = &sidecar.matcher {
            let _ = matcher.matches(&corral::Message::new("fuzz"));
        }
    }
});
