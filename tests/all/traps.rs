//! Panics and traps are surfaced with their reason; the plugin lives on.

use corral::{CallError, Trap};
use corral_test_guests as guests;

use crate::support::{load, message};

#[test]
fn a_panic_is_reported_with_its_message() {
    let panics = load("panics-message", guests::PANICS);
    match panics.process_message(&message("boom", "")) {
        Err(CallError::Panic { plugin, message }) => {
            assert_eq!(plugin, "panics-message");
            assert!(
                message.starts_with("panicking on purpose for a boom message (at "),
                "{message}"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(panics.timer_event(0).is_ok(), "a fresh instance answers");
    assert_eq!(panics.stats().instances, 2);
}

#[test]
fn a_stack_overflow_is_a_typed_trap() {
    let deep = load("stack-overflow", guests::STACK_OVERFLOW);
    match deep.process_message(&message("recurse", "")) {
        Err(CallError::Trap { plugin, trap }) => {
            assert_eq!((plugin.as_str(), trap), ("stack-overflow", Trap::StackOverflow));
        }
        other => panic!("expected a stack overflow, got {other:?}"),
    }
    assert!(deep.timer_event(0).is_ok());
}

#[test]
fn errors_name_the_plugin_and_the_reason_in_words() {
    let panics = load("panics-words", guests::PANICS);
    let error = panics.process_message(&message("boom", "")).unwrap_err();
    assert_eq!(error.plugin(), "panics-words");
    let text = error.to_string();
    assert!(
        text.starts_with("plugin `panics-words` panicked: panicking on purpose"),
        "{text}"
    );
}
