//! The JSON message decoder on arbitrary bytes: never panics, and what it decodes
//! encodes and decodes back to the same message.
#![no_main]

use corral::{Message, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(message) = Message::from_json(text) else { return };
    let again = Message::from_json(&message.to_json()).expect("an encoded message decodes");
    // Non-finite floats have no JSON number form and come back as their text.
    let finite = message.fields.iter().all(|f| !matches!(f.value, Value::Float(x) if !x.is_finite()));
    if finite {
        assert_eq!(again, message);
    }
});
