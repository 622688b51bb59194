//! A decoder's `[input]`: what the daemon reads and hands it (see the `intake` module).
//!
//! ```toml
//! [input]
//! type = "tail"                        # or "udp", "tcp"
//! path = "/var/log/nginx/access*.log"  # tail: a file, or a glob in the file name
//! start-at = "end"                     # tail, a file new to the input: "end" or "beginning"
//! max-line = "64KiB"                   # longer lines (records) are cut and counted
//! rotated-grace-ms = 5000              # tail: how long a rotated file is still read
//! poll-ms = 100                        # tail: how often the files are looked at
//! address = "127.0.0.1:5514"           # udp, tcp: where to listen
//! max-connections = 64                 # tcp
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where a decoder's records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputConfig {
    /// What reads them.
    pub kind: InputKind,
    /// The longest record kept, in bytes: a longer line is cut to it and counted.
    pub max_line: usize,
}

/// The kinds of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// Follow files.
    Tail(TailConfig),
    /// Syslog datagrams, one record each.
    Udp {
        /// Where to listen.
        address: SocketAddr,
    },
    /// Syslog over TCP: octet-counted (RFC 6587) or newline-framed.
    Tcp {
        /// Where to listen.
        address: SocketAddr,
        /// The most connections served at once; more wait to be accepted.
        max_connections: usize,
    },
}

/// How a `tail` input follows its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailConfig {
    /// A file, or a glob (`*`, `?`) in the file name: its directory is literal.
    pub path: PathBuf,
    /// Where a file new to the input is read from: its end, or its beginning. A file
    /// that appears after the input started is always read from its beginning.
    pub start_at: StartAt,
    /// How long a rotated file (renamed, its path now another file) is still followed.
    pub rotated_grace: Duration,
    /// How often the files are looked at.
    pub poll: Duration,
}

/// Where a file new to a `tail` input is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAt {
    /// What is written from now on.
    #[default]
    End,
    /// Everything in it.
    Beginning,
}

/// The default [`InputConfig::max_line`]: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KindFile {
    Tail,
    Udp,
    Tcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct InputFile {
    #[serde(rename = "type")]
    kind: KindFile,
    path: Option<PathBuf>,
    start_at: Option<StartAt>,
    max_line: Option<SizeFile>,
    rotated_grace_ms: Option<u64>,
    poll_ms: Option<std::num::NonZeroU64>,
    address: Option<String>,
    max_connections: Option<std::num::NonZeroUsize>,
}

/// A size in the sidecar: bytes, or a string with KiB, MiB or GiB (as in `[limits]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeFile {
    Bytes(u64),
    Text(String),
}

impl SizeFile {
    fn bytes(self) -> Result<u64, String> {
        match self {
            SizeFile::Bytes(n) => Ok(n),
            SizeFile::Text(text) => corral::parse_size(&text).map_err(|e| format!("`input.max-line`: {e}")),
        }
    }
}

impl InputFile {
    /// The input, or why the table is wrong.
    pub(crate) fn config(self) -> Result<InputConfig, String> {
        let max_line = match self.max_line.map(SizeFile::bytes).transpose()? {
            None => DEFAULT_MAX_LINE,
            Some(0) => return Err("`input.max-line` must be at least 1 byte".into()),
            Some(size) => usize::try_from(size).map_err(|_| "`input.max-line` is too large")?,
        };
        let not_for = |key: &str, kind: &str| Err(format!("`input.{key}` is not a key of a `{kind}` input"));
        let address = |kind: &str| -> Result<SocketAddr, String> {
            let text = self
                .address
                .as_deref()
                .ok_or_else(|| format!("a `{kind}` input needs `input.address`, e.g. \"127.0.0.1:5514\""))?;
            text.parse()
                .map_err(|e| format!("`input.address` = {text:?} is not an ip:port address: {e}"))
        };
        let kind = match self.kind {
            KindFile::Tail => {
                if self.address.is_some() {
                    return not_for("address", "tail");
                }
                if self.max_connections.is_some() {
                    return not_for("max-connections", "tail");
                }
                let path = self
                    .path
                    .ok_or("a `tail` input needs `input.path`, a file or a glob")?;
                if path.file_name().is_none() {
                    return Err(format!("`input.path` = {path:?} names no file"));
                }
                let dir = path.parent().map(|p| p.to_string_lossy().into_owned());
                if dir.is_some_and(|d| d.contains(['*', '?', '['])) {
                    return Err(format!(
                        "`input.path` = {path:?}: a glob may only be in the file name, not in its directory"
                    ));
                }
                InputKind::Tail(TailConfig {
                    path,
                    start_at: self.start_at.unwrap_or_default(),
                    rotated_grace: Duration::from_millis(self.rotated_grace_ms.unwrap_or(5000)),
                    poll: Duration::from_millis(self.poll_ms.map_or(100, |p| p.get())),
                })
            }
            kind @ (KindFile::Udp | KindFile::Tcp) => {
                let name = if matches!(kind, KindFile::Udp) {
                    "udp"
                } else {
                    "tcp"
                };
                for (key, set) in [
                    ("path", self.path.is_some()),
                    ("start-at", self.start_at.is_some()),
                    ("rotated-grace-ms", self.rotated_grace_ms.is_some()),
                    ("poll-ms", self.poll_ms.is_some()),
                ] {
                    if set {
                        return not_for(key, name);
                    }
                }
                let address = address(name)?;
                match kind {
                    KindFile::Udp if self.max_connections.is_some() => {
                        return not_for("max-connections", "udp");
                    }
                    KindFile::Udp => InputKind::Udp { address },
                    _ => InputKind::Tcp {
                        address,
                        max_connections: self.max_connections.map_or(64, |n| n.get()),
                    },
                }
            }
        };
        Ok(InputConfig { kind, max_line })
    }
}

/// Whether `name` matches the glob `pattern`: `*` any run of characters, `?` one.
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic backtracking match, linear for one `*` at a time.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_file_names() {
        assert!(glob_matches("access*.log", "access.log"));
        assert!(glob_matches("access*.log", "access-2.log"));
        assert!(!glob_matches("access*.log", "access.log.1"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("plain.log", "plain.log"));
    }

    #[test]
    fn an_input_table_is_checked() {
        let parse = |text: &str| {
            let file: InputFile = toml::from_str(text).map_err(|e| e.to_string())?;
            file.config()
        };
        let tail = parse(
            "type = \"tail\"\npath = \"/var/log/x*.log\"\nstart-at = \"beginning\"\nmax-line = \"1KiB\"",
        )
        .unwrap();
        assert_eq!(tail.max_line, 1024);
        assert!(matches!(
            tail.kind,
            InputKind::Tail(TailConfig {
                start_at: StartAt::Beginning,
                ..
            })
        ));
        assert!(parse("type = \"tail\"").unwrap_err().contains("input.path"));
        assert!(
            parse("type = \"tail\"\npath = \"/a*/x.log\"")
                .unwrap_err()
                .contains("file name")
        );
        assert!(
            parse("type = \"udp\"\naddress = \"nope\"")
                .unwrap_err()
                .contains("ip:port")
        );
        assert!(
            parse("type = \"udp\"\naddress = \"127.0.0.1:1\"\npath = \"/x\"")
                .unwrap_err()
                .contains("path")
        );
        assert!(parse("type = \"tcp\"\naddress = \"127.0.0.1:1\"").is_ok());
        assert!(parse("type = \"ftp\"").is_err());
    }
}
