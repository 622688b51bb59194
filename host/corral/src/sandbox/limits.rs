//! The limits one plugin runs under.
//!
//! Heka gave each Lua sandbox an instruction limit, a memory limit and an output limit
//! per call, and terminated the sandbox when one was crossed. Corral keeps those (fuel
//! plays the instruction count), adds the wall-clock deadline Heka lacked, and counts
//! consecutive failures so that one bad message does not end a plugin but a plugin that
//! fails every call does end.
//!
//! Every limit is per plugin and can be overridden; the defaults below are documented
//! in the README and chosen so that a small Rust guest never comes near them.

use std::time::Duration;

/// The limits a plugin runs under. Start from [`Limits::default`] and override fields.
///
/// ```
/// use std::time::Duration;
/// let limits = corral::Limits {
///     deadline: Duration::from_millis(50),
///     ..corral::Limits::default()
/// };
/// assert_eq!(limits.memory_bytes, corral::Limits::DEFAULT_MEMORY_BYTES);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel for one call, refilled before each call. One unit is roughly one
    /// WebAssembly instruction (Heka's instruction limit).
    pub fuel: u64,
    /// The most linear memory the sandbox may hold, in bytes, across all its memories.
    pub memory_bytes: u64,
    /// Wall-clock time one call may take, enforced by epoch interruption. The
    /// resolution is the host's epoch tick (see [`crate::HostBuilder::epoch_tick`]).
    pub deadline: Duration,
    /// Bytes one call may log (log import plus stdout and stderr) and emit, together.
    pub output_bytes: u64,
    /// Messages one call may emit.
    pub emits: u32,
    /// Consecutive failed calls after which the plugin is terminated. A guest's own
    /// fatal failure terminates it at once. Must be at least 1.
    pub max_consecutive_failures: u32,
    /// The longest key the plugin may use in its store, in bytes.
    pub store_key_bytes: u32,
    /// The largest value the plugin may put in its store, in bytes.
    pub store_value_bytes: u32,
    /// The most keys the plugin's store namespace may hold.
    pub store_keys: u32,
}

impl Limits {
    /// Default fuel per call: 100 million units, about 10 ms of pure computation.
    pub const DEFAULT_FUEL: u64 = 100_000_000;
    /// Default memory cap: 16 MiB (Heka's default was 8 MiB for a Lua state).
    pub const DEFAULT_MEMORY_BYTES: u64 = 16 << 20;
    /// Default wall-clock deadline per call: one second.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(1);
    /// Default output cap per call: 64 KiB, as in Heka.
    pub const DEFAULT_OUTPUT_BYTES: u64 = 64 << 10;
    /// Default emit cap per call.
    pub const DEFAULT_EMITS: u32 = 100;
    /// Default number of consecutive failures before termination.
    pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 5;
    /// Default longest store key: 1 KiB.
    pub const DEFAULT_STORE_KEY_BYTES: u32 = 1 << 10;
    /// Default largest store value: 1 MiB.
    pub const DEFAULT_STORE_VALUE_BYTES: u32 = 1 << 20;
    /// Default most keys in one store namespace.
    pub const DEFAULT_STORE_KEYS: u32 = 10_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            deadline: Self::DEFAULT_DEADLINE,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            emits: Self::DEFAULT_EMITS,
            max_consecutive_failures: Self::DEFAULT_MAX_CONSECUTIVE_FAILURES,
            store_key_bytes: Self::DEFAULT_STORE_KEY_BYTES,
            store_value_bytes: Self::DEFAULT_STORE_VALUE_BYTES,
            store_keys: Self::DEFAULT_STORE_KEYS,
        }
    }
}

/// The limit a call ran into, as reported in [`crate::CallError::Limit`] and in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`Limits::fuel`].
    Fuel,
    /// [`Limits::memory_bytes`].
    Memory,
    /// [`Limits::deadline`].
    Deadline,
    /// [`Limits::output_bytes`].
    Output,
    /// [`Limits::emits`].
    Emits,
    /// The bytes one host call may take from the guest (its strings and lists, as
    /// wasmtime copies them: its "hostcall fuel"): [`Limits::memory_bytes`], so a
    /// call cannot make the host copy more than the sandbox holds.
    HostCopy,
}

impl Limit {
    /// The limit's name as written in configuration and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Fuel => "fuel",
            Limit::Memory => "memory",
            Limit::Deadline => "deadline",
            Limit::Output => "output",
            Limit::Emits => "emits",
            Limit::HostCopy => "host-copy",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a size: `123` (bytes), `64KiB`, `16MiB`, `1GiB` (or `K`, `M`, `G`).
///
/// # Errors
///
/// A message saying what is wrong with `text`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a size: expected bytes, or e.g. 64KiB or 16MiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("lots").is_err());
    }
}
