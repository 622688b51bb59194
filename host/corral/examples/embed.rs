//! Embedding Corral: make a host, load plugins with limits and config, call them, read
//! what they emitted and their stats.
//!
//! Run it after `just guests`: `cargo run -p corral --example embed`

use std::time::Duration;

use corral::{CallError, Host, Limits, Message, PluginOptions, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One host per process: it owns the engine, the epoch thread and the store backend.
    let host = Host::new()?;

    // Load from a path (the plugin is named after the file: `counter`) with limits.
    let limits = Limits {
        fuel: 10_000_000,
        memory_bytes: 8 << 20,
        deadline: Duration::from_millis(100),
        ..Limits::default()
    };
    let counter = host.load_file("target/guests/counter.wasm", PluginOptions::with_limits(limits))?;

    // Or from bytes, under a name of your choice, with config values.
    let bytes = std::fs::read("target/guests/hello.wasm")?;
    let hello = host.load(
        "greeter",
        &bytes,
        PluginOptions::default().config("greeting", "Howdy"),
    )?;

    // process-message: the message stays on the host; the guest reads what it needs.
    for type_ in ["login", "logout", "login"] {
        let message = Message::new(type_).with_field("user", Value::String("alice".into()));
        counter.process_message(&message)?;
    }
    let greeted = hello.process_message(&Message {
        logger: "alice".into(),
        ..Message::new("login")
    })?;
    println!("greeter emitted: {}", greeted.emitted[0].to_json());

    // timer-event: the counter emits its totals.
    let outcome = counter.timer_event(corral::now_ns())?;
    for message in &outcome.emitted {
        println!("counter emitted: {}", message.to_json());
    }

    // A failure is a typed error naming the plugin and the reason.
    match counter.process_message(&Message::new("x".repeat(2000))) {
        Ok(_) => println!("counted a message with a long type"),
        Err(CallError::Failed { plugin, message }) => println!("{plugin} refused: {message}"),
        Err(other) => return Err(other.into()),
    }

    let stats = counter.stats();
    println!(
        "counter: {} calls, {} failed, average {:?}, max fuel {}, memory {} bytes",
        stats.calls(),
        stats.failures(),
        stats.process_message.average_duration(),
        stats.max_fuel_used,
        stats.memory_bytes,
    );
    Ok(())
}
