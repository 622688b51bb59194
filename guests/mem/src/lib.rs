//! Example metric plugin: memory usage read from procfs.
//!
//! - **timer-event** reads `<proc>/meminfo` and emits one `metric.mem` message with
//!   int fields `total-bytes` (MemTotal), `available-bytes` (MemAvailable) and
//!   `used-bytes` (total - available), and float field `used-percent`
//!   (`100 * used / total`, 0.0 when the total is 0). The file gives sizes in kB, which
//!   the kernel means as KiB: they are multiplied by 1024.
//! - **process-message**: does nothing.
//! - **config**: `proc`, the directory holding `meminfo` (default `/proc`). The host must
//!   grant it, read-only is enough: see `mem.toml`.
//!
//! A file that cannot be read, or that lacks either line, is a non-fatal failure naming
//! the file and the reason.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

/// The value of a `Key:   1234 kB` line, in bytes.
fn bytes(meminfo: &str, key: &str) -> Result<i64, String> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .ok_or_else(|| format!("no `{key}` line"))?;
    line.trim()
        .strip_suffix("kB")
        .and_then(|kib| kib.trim().parse::<i64>().ok())
        .filter(|kib| *kib >= 0)
        .and_then(|kib| kib.checked_mul(1024))
        .ok_or_else(|| format!("`{key}` is not a size in kB: {:?}", line.trim()))
}

struct Mem;

impl Guest for Mem {
    fn process_message(_: &Message) -> Result<(), Failure> {
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let proc = corral_guest::config_or("proc", "/proc");
        let path = format!("{}/meminfo", proc.trim_end_matches('/'));
        let fail = |why: String| Failure::non_fatal(format!("{path}: {why}"));
        let meminfo = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let total = bytes(&meminfo, "MemTotal").map_err(fail)?;
        let available = bytes(&meminfo, "MemAvailable").map_err(fail)?;
        let used = (total - available).max(0);
        let percent = if total > 0 {
            100.0 * used as f64 / total as f64
        } else {
            0.0
        };
        corral_guest::emit(
            &OutMessage::new("metric.mem")
                .field("total-bytes", Value::Int(total))
                .field("available-bytes", Value::Int(available))
                .field("used-bytes", Value::Int(used))
                .field("used-percent", Value::Float(percent)),
        );
        Ok(())
    }
}

corral_guest::export!(Mem);
