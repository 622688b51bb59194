//! The daemon's own per-plugin settings, beside the library's registry: which messages
//! reach a plugin (`[matcher]`), how often its timer runs (`ticker-interval-ms`) and
//! where a plugin new to the daemon starts reading the log (`start-from`), and a
//! decoder's input (`[input]`).
//!
//! They are sidecar keys the library does not read. The watcher is told of them
//! ([`DaemonSections`], a [`SidecarSections`]), so they are welcome in a sidecar, checked
//! with their line and key when the file is read (a bad one refuses the sidecar as a
//! whole and keeps the serving version's settings), and kept in the serving
//! [`Sidecar::extra`]. [`Routes`] turns those into [`Settings`] once per loaded sidecar
//! and answers the workers from its table.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use corral::{Message, Registry, Sidecar, SidecarSections};
use serde::Deserialize;

use crate::input::{InputConfig, InputFile};
use crate::matcher::Matcher;

/// A plugin's settings for the daemon, from its sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Which messages reach the plugin; `None` (no `[matcher]`) means none do, as in
    /// Heka.
    pub matcher: Option<Matcher>,
    /// How often the daemon calls `timer-event`; `None` (the default) means never.
    pub ticker_interval: Option<Duration>,
    /// Where the daemon's log is read from by a plugin new to the daemon (one without a
    /// checkpoint): `start-from = "end"` (the default) or `"earliest"`.
    pub start_from: StartFrom,
    /// A decoder's input (`[input]`, see [`InputConfig`]): what the daemon reads and
    /// hands it. `None` for a filter.
    pub input: Option<InputConfig>,
}

/// Where a plugin new to the daemon starts reading its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// After the last message accepted: only what comes from now on.
    #[default]
    End,
    /// From the earliest message the log still holds: reprocess history.
    Earliest,
}

/// The daemon's keys of a sidecar; the library's are read by the library.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    ticker_interval_ms: Option<NonZeroU64>,
    start_from: Option<StartFrom>,
    matcher: Option<Matcher>,
    input: Option<InputFile>,
    // The library's keys are checked by the library, and ignored here: not collected
    // (a `toml::Table` cannot hold a u64 above i64::MAX, such as `fuel = u64::MAX`).
}

impl File {
    fn settings(self) -> Result<Settings, String> {
        Ok(Settings {
            matcher: self.matcher,
            ticker_interval: self.ticker_interval_ms.map(|ms| Duration::from_millis(ms.get())),
            start_from: self.start_from.unwrap_or_default(),
            input: self.input.map(InputFile::config).transpose()?,
        })
    }
}

impl Settings {
    /// The daemon's settings in a sidecar's text (its other keys are the library's).
    ///
    /// # Errors
    ///
    /// The reason, with the line and key, when the daemon's keys are not valid.
    pub fn parse(text: &str) -> Result<Settings, String> {
        toml::from_str::<File>(text)
            .map_err(|e| e.to_string().trim_end().to_owned())?
            .settings()
    }

    /// The daemon's settings in a parsed sidecar (checked when it was read, through
    /// [`DaemonSections`]).
    pub fn of(sidecar: &Sidecar) -> Settings {
        match toml::Value::Table(sidecar.extra.clone())
            .try_into::<File>()
            .map_err(|e| e.to_string())
            .and_then(File::settings)
        {
            Ok(settings) => settings,
            Err(e) => {
                // Not read through DaemonSections (an embedder's install, say).
                tracing::warn!("the sidecar's daemon settings are not valid, ignored: {e}");
                Settings::default()
            }
        }
    }
}

/// The daemon's sidecar keys, for the watcher ([`corral::WatchOptions::sections`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonSections;

impl SidecarSections for DaemonSections {
    fn keys(&self) -> &[&str] {
        &["matcher", "ticker-interval-ms", "start-from", "input"]
    }

    fn check(&self, text: &str) -> Result<(), String> {
        Settings::parse(text).map(drop)
    }
}

/// Each name's serving sidecar, and the settings made from it.
type Table = HashMap<String, (Arc<Sidecar>, Arc<Settings>)>;

/// The daemon's table of per-plugin settings, beside the registry's names: each serving
/// sidecar's [`Settings`], made once per sidecar.
#[derive(Debug)]
pub struct Routes {
    registry: Registry,
    table: RwLock<Table>,
}

impl Routes {
    /// The settings of the plugins `registry` serves.
    pub fn new(registry: Registry) -> Routes {
        Routes {
            registry,
            table: RwLock::default(),
        }
    }

    /// The settings `name` serves with; `None` when nothing serves it.
    pub fn settings(&self, name: &str) -> Option<Arc<Settings>> {
        let Some(sidecar) = self.registry.sidecar(name) else {
            self.table
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            return None;
        };
        if let Some((seen, settings)) = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            && Arc::ptr_eq(seen, &sidecar)
        {
            return Some(settings.clone());
        }
        let settings = Arc::new(Settings::of(&sidecar));
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), (sidecar, settings.clone()));
        Some(settings)
    }

    /// The names of the loaded plugins whose matcher accepts `message`, sorted. A plugin
    /// without a matcher receives nothing, as in Heka.
    pub fn matching(&self, message: &Message) -> Vec<String> {
        self.registry
            .names()
            .into_iter()
            .filter(|name| {
                self.settings(name)
                    .is_some_and(|s| s.matcher.as_ref().is_some_and(|m| m.matches(message)))
            })
            .collect()
    }

    /// The matchers of the plugins loaded now, to ask of many messages whether any
    /// takes them (what intake counts as unmatched when none does) without looking each
    /// plugin up again per message.
    pub fn matchers(&self) -> Matchers {
        Matchers(
            self.registry
                .names()
                .iter()
                .filter_map(|name| self.settings(name))
                .filter(|s| s.matcher.is_some())
                .collect(),
        )
    }
}

/// The matchers of the plugins loaded at one moment ([`Routes::matchers`]).
#[derive(Debug, Clone, Default)]
pub struct Matchers(Vec<Arc<Settings>>);

impl Matchers {
    /// Whether one of them takes every message (`all = true`): then
    /// [`Matchers::any`] is true whatever the message.
    pub fn take_all(&self) -> bool {
        self.0.iter().any(|s| s.matcher.as_ref().is_some_and(|m| m.all))
    }

    /// Whether any of them accepts `message`. A plugin without a matcher receives
    /// nothing, as in Heka.
    pub fn any(&self, message: &Message) -> bool {
        self.0
            .iter()
            .any(|s| s.matcher.as_ref().is_some_and(|m| m.matches(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_keys_are_read_and_checked_with_their_line() {
        let text = "ticker-interval-ms = 1500\nstart-from = \"earliest\"\n[limits]\nfuel = 18446744073709551615\n[matcher]\ntype = \"nginx.*\"\n";
        let settings = Settings::parse(text).unwrap();
        assert_eq!(settings.ticker_interval, Some(Duration::from_millis(1500)));
        assert_eq!(settings.start_from, StartFrom::Earliest);
        assert!(settings.matcher.is_some());
        let sidecar = Sidecar::parse_with(text, Some(&DaemonSections)).unwrap();
        assert_eq!(Settings::of(&sidecar), settings);
        assert_eq!(sidecar.options.limits.fuel, u64::MAX);

        let error = Sidecar::parse_with(
            "[limits]\nfuel = 1\n[matcher]\ntpye = \"x\"\n",
            Some(&DaemonSections),
        )
        .unwrap_err();
        assert!(
            error.contains("line 4") && error.contains("unknown field `tpye`"),
            "{error}"
        );
        let error = Sidecar::parse_with("ticker-interval-ms = 0\n", Some(&DaemonSections)).unwrap_err();
        assert!(error.contains("line 1") && error.contains("nonzero"), "{error}");
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
    }
}
