// The plugin, shared by `lookup-host` and `lookup-host-b`, which set `VERSION`.

wit_bindgen::generate!({
    inline: "
        package acme:lookup-plugin;

        world plugin {
            include corral:plugin/filter@0.1.0;
            import acme:lookup/lookup@0.1.0;
        }
    ",
    path: ["../../wit", "../lookup-host/wit"],
    generate_all,
});

use acme::lookup::lookup;
use corral::plugin::emit::emit;
use corral::plugin::types::{Field, OutMessage, Value};

struct LookupHost;

fn string(name: &str, text: &str) -> Field {
    Field {
        name: name.into(),
        value: Value::String(text.into()),
    }
}

impl Guest for LookupHost {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let Some(Value::String(key)) = message.field("key") else {
            return Err(Failure::NonFatal("missing string field `key`".into()));
        };
        let found = lookup::get(&key).map_err(|e| Failure::NonFatal(format!("lookup of `{key}` failed: {e}")))?;
        let mut fields = vec![string("key", &key), string("version", VERSION)];
        let type_ = match found {
            Some(value) => {
                fields.push(string("value", &value));
                "lookup.found"
            }
            None => "lookup.missing",
        };
        emit(&OutMessage {
            timestamp: None,
            type_: type_.into(),
            logger: String::new(),
            severity: 6,
            payload: String::new(),
            fields,
        });
        if message.field("then-spin").is_some() {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

export!(LookupHost);
