//! Example metric plugin: CPU usage read from procfs (the MetricPlugin of the Go plugins
//! demo, sandboxed).
//!
//! - **timer-event** reads the first line of `<proc>/stat`,
//!   `cpu  user nice system idle iowait irq softirq steal ...` (in jiffies, summed over
//!   all CPUs), and emits one `metric.cpu` message with
//!   - int fields `user`, `nice`, `system`, `idle`, `iowait`: the jiffies spent in each
//!     state since the previous tick (since boot on the first tick);
//!   - float field `busy-percent`: `100 * (total - idle) / total` over the same period,
//!     where total is the sum of the eight columns `user` to `steal` (guest time is
//!     already part of `user` and `nice`) and idle is `idle + iowait`; 0.0 when the total
//!     did not move.
//! - **process-message**: does nothing.
//! - **config**: `proc`, the directory holding `stat` (default `/proc`). The host must
//!   grant it, read-only is enough: see `cpu.toml`.
//!
//! A file that cannot be read or parsed is a non-fatal failure naming the file and the
//! reason. The previous totals live in guest memory: after a trap or a reload the next
//! tick counts from boot again, and so does a tick that sees a counter go backwards.

use std::cell::Cell;

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

/// The columns we read, in the order of the `cpu` line.
const COLUMNS: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

type Jiffies = [i64; 8];

thread_local! {
    /// The totals seen by the previous tick.
    static PREVIOUS: Cell<Option<Jiffies>> = const { Cell::new(None) };
}

fn read_jiffies(path: &str) -> Result<Jiffies, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut columns = text.lines().next().unwrap_or("").split_whitespace();
    if columns.next() != Some("cpu") {
        return Err("the first line is not the `cpu` total".into());
    }
    let mut jiffies = [0; 8];
    for (slot, name) in jiffies.iter_mut().zip(COLUMNS) {
        let column = columns
            .next()
            .ok_or_else(|| format!("the `{name}` column is missing"))?;
        *slot = column
            .parse()
            .ok()
            .filter(|j: &i64| *j >= 0)
            .ok_or_else(|| format!("`{name}` is not a count of jiffies: {column:?}"))?;
    }
    Ok(jiffies)
}

struct Cpu;

impl Guest for Cpu {
    fn process_message(_: &Message) -> Result<(), Failure> {
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let proc = corral_guest::config_or("proc", "/proc");
        let path = format!("{}/stat", proc.trim_end_matches('/'));
        let now = read_jiffies(&path).map_err(|why| Failure::non_fatal(format!("{path}: {why}")))?;
        let delta: Jiffies = match PREVIOUS.replace(Some(now)) {
            Some(before) if now.iter().zip(before).all(|(n, b)| *n >= b) => {
                std::array::from_fn(|i| now[i] - before[i])
            }
            _ => now,
        };
        // In f64 so that no sum can overflow.
        let total: f64 = delta.iter().map(|&j| j as f64).sum();
        let idle = (delta[3] as f64) + (delta[4] as f64);
        let busy = if total > 0.0 {
            100.0 * (total - idle) / total
        } else {
            0.0
        };
        let mut metric = OutMessage::new("metric.cpu");
        for (name, jiffies) in COLUMNS.iter().zip(delta).take(5) {
            metric = metric.field(*name, Value::Int(jiffies));
        }
        corral_guest::emit(&metric.field("busy-percent", Value::Float(busy)));
        Ok(())
    }
}

corral_guest::export!(Cpu);
