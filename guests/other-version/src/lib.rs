//! Bad file for the tests: a plugin built against `corral:plugin@0.2.0`, a future version
//! of the contract this host does not provide.

wit_bindgen::generate!({
    inline: "
        package corral:plugin@0.2.0;

        interface log {
            enum level { trace, debug, info, warn, error }
            log: func(level: level, message: string);
        }

        world filter {
            import log;
            export process-message: func(payload: string) -> result<_, string>;
            export timer-event: func(now-ns: s64) -> result<_, string>;
        }
    ",
});

use corral::plugin::log::{Level, log};

struct Future;

impl Guest for Future {
    fn process_message(payload: String) -> Result<(), String> {
        log(Level::Info, &payload);
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
