//! Host functions of the embedder's own: plugins import `acme:lookup/lookup`, a table
//! this program owns, next to Corral's world. The host side is generated with
//! `bindgen!` from the same WIT the plugin is built against
//! (`guests/lookup-host/wit/lookup.wit`), implemented on `HostCtx<Table>`, and handed
//! to `HostBuilder::host_functions`. Then the program watches a directory, drops the
//! plugin in, calls it, and swaps in a second build while it keeps calling.
//!
//! Run it after `just guests`: `cargo run -p corral --example host-functions`. It
//! depends on `corral` alone (the test `embedder::*` builds it as a crate of its own,
//! outside the workspace); its arguments are the two builds of the plugin (default
//! `target/guests/lookup-host.wasm` and `target/guests/lookup-host-b.wasm`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use corral::wasmtime::component::HasSelf;
use corral::{Event, Host, HostCtx, Message, Registry, Value};

/// The host side of `acme:lookup`, generated from the plugin's WIT.
mod bindings {
    corral::wasmtime::component::bindgen!({
        path: "../../guests/lookup-host/wit/lookup.wit",
        world: "host",
        wasmtime_crate: corral::wasmtime,
    });
}

use bindings::acme::lookup::lookup;

/// What each instance of a plugin sees: the shared table, and its own count of lookups.
struct Table {
    entries: Arc<RwLock<BTreeMap<String, String>>>,
    lookups: u64,
}

impl lookup::Host for HostCtx<Table> {
    fn get(&mut self, key: String) -> Result<Option<String>, String> {
        self.lookups += 1;
        // The plugin's config names the part of the table it may read.
        let namespace = self.config().get("namespace").cloned().unwrap_or_default();
        if key.is_empty() {
            // An error the guest sees as `err(...)`, and decides what to do with.
            return Err(format!("plugin `{}` asked for an empty key", self.plugin()));
        }
        let entries = self
            .entries
            .read()
            .map_err(|_| "the table is poisoned".to_owned())?;
        Ok(entries.get(&format!("{namespace}{key}")).cloned())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let build_a = args
        .next()
        .unwrap_or_else(|| "target/guests/lookup-host.wasm".into());
    let build_b = args
        .next()
        .unwrap_or_else(|| "target/guests/lookup-host-b.wasm".into());

    let entries = Arc::new(RwLock::new(BTreeMap::from([(
        "alice".to_owned(),
        "admin".to_owned(),
    )])));
    let shared = entries.clone();
    let host = Host::builder()
        .host_functions(
            |linker, get| lookup::add_to_linker::<_, HasSelf<_>>(linker, get),
            move |_plugin, _config| Table {
                entries: shared.clone(),
                lookups: 0,
            },
        )
        .build()?;

    // A watch directory: `lookup.wasm` is loaded, and swapped when it changes.
    let dir = std::env::temp_dir().join(format!("corral-host-functions-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let registry = Registry::new(host);
    let events = registry.subscribe();
    let _watcher = registry.watch(&dir)?;
    std::fs::copy(&build_a, dir.join("lookup.wasm"))?;
    wait_for(
        &events,
        |e| matches!(e, Event::Loaded { name, .. } if name == "lookup"),
    )?;

    let plugin = registry.handle("lookup");
    let ask = |key: &str| Message::new("query").with_field("key", Value::String(key.into()));
    let answer = |message: &Message| -> Result<String, Box<dyn std::error::Error>> {
        let outcome = plugin.process_message(message)?;
        let emitted = outcome.emitted.first().ok_or("the plugin emitted nothing")?;
        Ok(emitted.to_json())
    };
    println!("a: {}", answer(&ask("alice"))?);
    println!("a: {}", answer(&ask("bob"))?);
    // The host function's error, as the plugin reports it.
    match plugin.process_message(&ask("")) {
        Ok(_) => return Err("an empty key was looked up".into()),
        Err(error) => println!("a: {error}"),
    }

    // Swap in version b while calls go on: each call is served by a or by b, never lost.
    entries
        .write()
        .map_err(|_| "poisoned")?
        .insert("bob".into(), "guest".into());
    std::fs::copy(&build_b, dir.join("lookup.wasm.tmp"))?;
    std::fs::rename(dir.join("lookup.wasm.tmp"), dir.join("lookup.wasm"))?;
    let started = Instant::now();
    loop {
        let json = answer(&ask("bob"))?;
        if json.contains(r#""version":"b""#) {
            println!("b: {json}");
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("version b did not take over within 30 s".into());
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Waits up to 30 s for an event `f` accepts; a failed load is an error.
fn wait_for(
    events: &std::sync::mpsc::Receiver<Event>,
    f: impl Fn(&Event) -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left)? {
            Event::Failed { error, .. } => return Err(error.into()),
            event if f(&event) => return Ok(()),
            _ => {}
        }
    }
}
