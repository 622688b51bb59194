//! Example metric plugin: bytes read and written per disk, read from procfs.
//!
//! - **timer-event** reads `<proc>/diskstats`, whose lines are
//!   `major minor name reads merged sectors-read ms writes merged sectors-written ms ...`,
//!   and emits one `metric.disk` message with, for each selected device, int fields
//!   `<device>.read-bytes` (column 6) and `<device>.write-bytes` (column 10): sectors
//!   times 512 (diskstats always counts 512-byte sectors), totals since boot, in the
//!   order of the file.
//! - **process-message**: does nothing.
//! - **config**:
//!   - `proc`, the directory holding `diskstats` (default `/proc`). The host must grant
//!     it, read-only is enough: see `disk.toml`.
//!   - `devices`, a comma-separated list of device names, e.g. `sda,nvme0n1`. Unset or
//!     empty: every whole disk, taken to be every name that does not end in a digit
//!     (`sda`, `vda`; not `sda1`, `loop0`, `dm-0`, `zram0`) plus NVMe namespaces, names
//!     starting with `nvme` that have no `p` (`nvme0n1`; not its partition `nvme0n1p1`).
//!     Disks named otherwise (`mmcblk0`, `md0`) must be listed.
//!
//! A file that cannot be read, or a selected device whose line has no sector count where
//! one is expected, is a non-fatal failure naming the file and the reason. A listed device
//! missing from the file is logged as a warning.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

/// The default selection: whole disks, not partitions or virtual devices.
fn whole_disk(name: &str) -> bool {
    let nvme_namespace = name.strip_prefix("nvme").is_some_and(|rest| !rest.contains('p'));
    !name.ends_with(|c: char| c.is_ascii_digit()) || nvme_namespace
}

struct Disk;

impl Guest for Disk {
    fn process_message(_: &Message) -> Result<(), Failure> {
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let proc = corral_guest::config_or("proc", "/proc");
        let path = format!("{}/diskstats", proc.trim_end_matches('/'));
        let listed = corral_guest::config_or("devices", "");
        let listed: Vec<&str> = listed
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        let text = std::fs::read_to_string(&path).map_err(|e| Failure::non_fatal(format!("{path}: {e}")))?;

        let mut metric = OutMessage::new("metric.disk");
        let mut seen = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let Some(&name) = columns.get(2) else { continue };
            let selected = if listed.is_empty() {
                whole_disk(name)
            } else {
                listed.contains(&name)
            };
            if !selected {
                continue;
            }
            // `column` is 1-based, as in the kernel's documentation of the format.
            let bytes = |column: usize| {
                columns
                    .get(column - 1)
                    .and_then(|sectors| sectors.parse::<i64>().ok())
                    .filter(|sectors| *sectors >= 0)
                    .and_then(|sectors| sectors.checked_mul(512))
                    .map(Value::Int)
                    .ok_or_else(|| {
                        let line = number + 1;
                        Failure::non_fatal(format!(
                            "{path}: line {line}: column {column} is not a sector count"
                        ))
                    })
            };
            metric = metric
                .field(format!("{name}.read-bytes"), bytes(6)?)
                .field(format!("{name}.write-bytes"), bytes(10)?);
            seen.push(name);
        }
        for device in listed.iter().filter(|d| !seen.contains(d)) {
            corral_guest::warn!("device {device} is not in {path}");
        }
        corral_guest::emit(&metric);
        Ok(())
    }
}

corral_guest::export!(Disk);
