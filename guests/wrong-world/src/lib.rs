//! Bad file for the tests: a valid component, but for an unrelated world — it exports
//! `run` instead of Corral's entry points, and imports an interface Corral lacks.

wit_bindgen::generate!({
    inline: "
        package acme:other@1.0.0;

        interface secrets {
            reveal: func() -> string;
        }

        world thing {
            import secrets;
            export run: func() -> string;
        }
    ",
});

struct Thing;

impl Guest for Thing {
    fn run() -> String {
        acme::other::secrets::reveal()
    }
}

export!(Thing);
