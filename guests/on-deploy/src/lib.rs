//! Example event hook, like a script in a git-hooks directory: it runs when a push
//! arrives and decides whether to deploy. Its sidecar (`on-deploy.toml`) routes only
//! messages of type `git.push` to it; the plugin itself does not look at the type.
//!
//! - **process-message** reads string fields `branch`, `commit` and `author` (a missing or
//!   non-string one is a non-fatal failure naming the field). When `branch` is the deploy
//!   branch it emits `hook.deploy` with string fields `branch`, `commit` and `author` and
//!   payload `deploy <commit> by <author>`; otherwise it logs
//!   `ignoring push to <branch>` at info and emits nothing.
//! - **timer-event**: does nothing.
//! - **config**: `branch`, the deploy branch (default `main`).

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

fn string_field(message: &Message, name: &str) -> Result<String, Failure> {
    match message.field(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Failure::non_fatal(format!("field `{name}` is not a string"))),
        None => Err(Failure::non_fatal(format!("missing field `{name}`"))),
    }
}

struct OnDeploy;

impl Guest for OnDeploy {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let branch = string_field(message, "branch")?;
        let commit = string_field(message, "commit")?;
        let author = string_field(message, "author")?;
        if branch != corral_guest::config_or("branch", "main") {
            corral_guest::info!("ignoring push to {branch}");
            return Ok(());
        }
        corral_guest::emit(
            &OutMessage::new("hook.deploy")
                .payload(format!("deploy {commit} by {author}"))
                .field("branch", Value::String(branch))
                .field("commit", Value::String(commit))
                .field("author", Value::String(author)),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(OnDeploy);
