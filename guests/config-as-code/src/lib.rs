//! Example plugin: configuration as code. A few inputs come from the plugin's config;
//! the settings derived from them are computed here, where rules can be written down
//! (the seed article did this in gopher-lua: `env = os.getenv("ENV")`, `log = "debug"`,
//! `plugins = {"plugin.lua"}`).
//!
//! - **timer-event**, and **process-message** of type `config.render` (other types are
//!   ignored): emits one `config.rendered` message with
//!   - string `env`: config `env`, default "development";
//!   - string `log-level`: config `log` when set, else "info" in production and "debug"
//!     elsewhere;
//!   - string `plugins`: config `plugins`, a comma-separated list, normalised: items
//!     trimmed, empty ones dropped, sorted, deduplicated, joined with ",";
//!   - int `plugin-count`: how many plugins that leaves;
//!   - bool `strict`: true in production;
//!   - and as payload the reasoning in one line, e.g.
//!     `env=production: log-level info, 2 plugins`.
//! - **config**: `env`, `log`, `plugins`, as above. Values are trimmed, and an empty value
//!   counts as unset. "production" is matched exactly (case-sensitive).

use corral_guest::{Failure, Guest, Message, OutMessage, Value, config};

/// A config value, trimmed; `None` when unset or empty.
fn setting(key: &str) -> Option<String> {
    config::get(key)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

fn render() {
    let env = setting("env").unwrap_or_else(|| "development".into());
    let production = env == "production";
    let log_level = setting("log").unwrap_or_else(|| if production { "info" } else { "debug" }.into());
    let plugins = setting("plugins").unwrap_or_default();
    let mut plugins: Vec<&str> = plugins
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    plugins.sort_unstable();
    plugins.dedup();
    let count = plugins.len();
    let s = if count == 1 { "" } else { "s" };
    corral_guest::emit(
        &OutMessage::new("config.rendered")
            .payload(format!("env={env}: log-level {log_level}, {count} plugin{s}"))
            .field("env", Value::String(env))
            .field("log-level", Value::String(log_level))
            .field("plugins", Value::String(plugins.join(",")))
            .field("plugin-count", Value::Int(count as i64))
            .field("strict", Value::Bool(production)),
    );
}

struct ConfigAsCode;

impl Guest for ConfigAsCode {
    fn process_message(message: &Message) -> Result<(), Failure> {
        if message.type_() == "config.render" {
            render();
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        render();
        Ok(())
    }
}

corral_guest::export!(ConfigAsCode);
