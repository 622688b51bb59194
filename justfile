# Corral's front door. `just` lists the recipes.

# List the recipes.
default:
    @just --list

# Add the wasm32-wasip2 target if this toolchain lacks it.
target:
    @rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Build every guest under guests/ into target/guests/<name>.wasm: the Rust ones with
# cargo, the Python (py-*) and JavaScript (js-*) ones with componentize-py and
# componentize-js, installed into target/tools/ on first use (tests/build.rs does it all).
guests: target
    cargo build -p corral-test-guests
    @echo "guests built into target/guests/" >&2

# Format check, clippy with warnings as errors, and every test.
test: target
    cargo fmt --all -- --check
    cd guests && cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd guests && cargo clippy --release -- -D warnings
    cargo test --workspace
    cd guests && cargo test -p corral-guest --target "$(rustc -vV | sed -n 's/^host: //p')"

# (The dev profile optimises dependencies, so the debug binary runs wasm at full speed
# and shares its build with `just test`.)
# The main job: the daemon on plugins/ with the metric plugins, admin API on 127.0.0.1:8000.
run: guests
    cargo build -p corral-daemon --bin corral
    cp target/guests/cpu.wasm target/guests/mem.wasm target/guests/disk.wasm plugins/
    target/debug/corral run plugins --admin 127.0.0.1:8000

# One-shot calls through the CLI, no daemon: check and call the example plugins.
demo: guests
    cargo build -p corral-daemon --bin corral
    @echo "== corral check target/guests/hello.wasm"
    target/debug/corral check target/guests/hello.wasm
    @echo "== corral call target/guests/hello.wasm --message ..."
    target/debug/corral call target/guests/hello.wasm --message '{"type":"login","logger":"alice"}'
    @echo "== corral call target/guests/counter.wasm: three messages, then the timer"
    target/debug/corral call target/guests/counter.wasm --message '{"type":"login"}' --message '{"type":"logout"}' --message '{"type":"login"}' --timer
    @echo "== corral call target/guests/infinite-loop.wasm: stopped by its fuel limit"
    -target/debug/corral call target/guests/infinite-loop.wasm --message '{}'

# Benchmarks (release build): print their figures; see BENCHMARKS.md. Per-message
# dispatch against bare wasmtime and Heka-style Lua, sandbox costs, drop-to-serving.
bench: target
    cargo bench -p corral-test-guests --features lua-bench --bench dispatch
    cargo bench -p corral-test-guests --bench sandboxes
    cargo bench -p corral-test-guests --bench drop_to_serving
    cargo bench -p corral-test-guests --bench idle

# End to end through the daemon: 1,000,000 messages stdin → log → batch-filter → output,
# durable and with --no-fsync; messages/s and peak RSS, and segment files against redb.
bench-pipeline: target
    cargo bench -p corral-test-guests --bench pipeline

# The soak: 10,000 traps and 1,000 swaps under load; fails on growth, failures or loss.
soak: target
    cargo bench -p corral-test-guests --bench soak

# Fuzz each target for SECONDS (cargo-fuzz, libFuzzer, no sanitizer so stable Rust works).
fuzz seconds="60": guests
    cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    mkdir -p fuzz/corpus/loader fuzz/corpus/sidecar fuzz/corpus/message_json
    cp target/guests/hello.wasm target/guests/counter.wasm target/guests/swap-a.wasm fuzz/corpus/loader/
    cp plugins/*.toml fuzz/corpus/sidecar/
    printf '%s' '{"timestamp":1,"type":"t","logger":"l","severity":3,"payload":"p","fields":{"s":"x","i":-2,"f":1.5,"b":true,"raw":{"bytes":"AAE="}}}' > fuzz/corpus/message_json/seed.json
    cd fuzz && for target in sidecar message_json loader; do \
        cargo fuzz run --sanitizer none -O "$target" "corpus/$target" -- -max_total_time={{seconds}} || exit 1; \
    done

# Format the host and the guests.
fmt:
    cargo fmt --all
    cd guests && cargo fmt --all

# Lint the host and the guests.
lint: target
    cargo clippy --workspace --all-targets -- -D warnings
    cd guests && cargo clippy --release -- -D warnings
