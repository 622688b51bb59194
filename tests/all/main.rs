//! Corral's integration suite: real guest components, built from `guests/` by the
//! `corral-test-guests` crate, loaded into real sandboxes.

// Shared helpers: one host for the whole binary, loading guests, building messages.
mod support;

// The WIT contract end to end: greeting, counting in the store, config, message access.
mod contract;
// The baseline tier: serving from Winch's code at once, moving to Cranelift's.
mod tier;
// The batch-filter world: a batch read in the guest, failures by index, the pipeline.
mod batch;
// Fuel, memory, deadline, output and emit caps, each ending in its typed error.
mod limits;
// Panics and traps: surfaced with their message, and a fresh instance afterwards.
mod traps;
// The termination policy: fatal failures and consecutive failures.
mod termination;
// The restart policy: back after a backoff that grows to a cap, or terminated for good.
mod restart;
// The deadline in wall time: sleeps, polls, blocking reads, start-up, save and restore.
mod deadline;
// Files that are not plugins, or not for this world, rejected with clear errors.
mod loading;
// Compile bombs, made at test time from a real guest and one more core module.
mod bombs;
// Bounded compiles: static limits, the compile worker's time and memory bounds.
mod compile;
// Directory grants that would hand a plugin the host, refused and logged.
mod grants;
// The engine's configuration: the proposals and features turned off, each refused.
mod engine;
// What WASI grants a guest: clocks and random, and nothing else.
mod isolation;
// Statistics as Heka reported them.
mod stats;
// The `corral` command line.
mod cli;
// The watch directory: load, swap with state handoff, unload, bad files, the cache.
mod hot_swap;
// Hostile guests: exact typed outcomes, the host up, the others answering.
mod hostile;
// What guests hand the host, checked: emitted messages, caps at written size, batch
// failures, escaped guest text, names, canonical-ABI faults.
mod integrity;
// Bad files in the watch directory: clear errors, nothing replaced, host up.
mod bad_files;
// `corral run`, the daemon, end to end against the real binary.
mod daemon;
// Decoders and their inputs: tail across rotation, syslog sockets, kill -9, swaps.
mod decoders;
// The dashboard at `GET /`, in a real headless browser against the daemon.
mod dashboard;
// Daemons sharing a NATS JetStream stream by partition: leases, takeover after
// kill -9 with exact state, deduplicated outputs, deploys through the object store.
mod cluster;
// The daemon's durable log: bursts, backpressure, kill -9, corrupt tails, swaps.
mod durable;
// Plugins in Python and JavaScript: the counter's outcomes, swaps, limits, the cache.
mod polyglot;
// `corral new`: projects in Rust, Python and JavaScript that build and load.
mod scaffold;
// The seeds' example plugins: lookup backends, configuration as code, hooks, sidecars.
mod examples;
// Host functions of the embedder's own: called, swapped, failing, under the deadline.
mod host_functions;
// Exports beyond Corral's worlds, called by name, typed or with `Val`s, and by the CLI.
mod exports;
// An embedder crate outside the workspace, depending on `corral` alone.
mod embedder;
// The README and docs/: every relative link resolves; the sidecar example parses.
mod docs;
