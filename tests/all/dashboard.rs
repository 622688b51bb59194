//! The dashboard at `GET /`, in a real headless browser: Chromium driven over WebDriver
//! (chromedriver, through fantoccini) against the real daemon (the harness of
//! `daemon.rs`). Each test starts its own chromedriver on a free loopback port and its
//! own daemon, and stops both. A screenshot of each state goes to `target/dashboard/`.
//!
//! Without `chromedriver` and Chromium on this machine the tests print SKIPPED and
//! pass, unless `CORRAL_REQUIRE_BROWSER` is set (as `.ci/run` does): then they fail.
//! `CORRAL_CHROMEDRIVER` and `CORRAL_CHROMIUM` name the binaries if they are not on
//! the PATH under their Debian names.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_test_guests as guests;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};

use crate::support::daemon::{Daemon, Dirs, agent};

const BOUND: Duration = Duration::from_secs(30);

/// chromedriver and a Chromium for it, or `None` after printing why the test is
/// skipped; with `CORRAL_REQUIRE_BROWSER` set, a missing one fails the test.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let find = |variable: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(variable) {
            return Some(PathBuf::from(path));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    };
    let driver = find("CORRAL_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find(
        "CORRAL_CHROMIUM",
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
    );
    match (driver, chromium) {
        (Some(driver), Some(chromium)) => Some((driver, chromium)),
        (driver, _) => {
            let why = if driver.is_none() {
                "no `chromedriver` on the PATH (Debian: apt-get install chromium-driver)"
            } else {
                "no Chromium on the PATH (Debian: apt-get install chromium)"
            };
            if std::env::var("CORRAL_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0") {
                panic!("{why}");
            }
            eprintln!("SKIPPED (set CORRAL_REQUIRE_BROWSER=1 to fail instead): {why}");
            None
        }
    }
}

/// Where the screenshots go: `target/dashboard/`.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver of our own, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(binary: &Path) -> Driver {
        // Port 0: chromedriver picks a free port and says which on stdout.
        let mut child = Command::new(binary)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let marker = "started successfully on port ";
        let deadline = Instant::now() + BOUND;
        let mut seen = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromedriver did not start: {seen:#?}"));
            if let Some(at) = line.find(marker) {
                let digits: String = line[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                break digits.parse::<u16>().unwrap();
            }
            seen.push(line);
        };
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on a page of the daemon.
struct Browser {
    client: Client,
    shots: PathBuf,
    _driver: Driver,
}

impl Browser {
    async fn open(driver: &Path, chromium: &Path, width: u32, height: u32) -> Browser {
        let driver = Driver::start(driver);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // CI runs as root in a container: no sandbox, no GPU, no /dev/shm.
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-extensions",
                    "--no-first-run",
                    "--force-device-scale-factor=1",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}"));
        Browser {
            client,
            shots: screenshots(),
            _driver: driver,
        }
    }

    /// A session on the dashboard of `daemon`, in a window of `width` by `height`.
    async fn on(daemon: &Daemon, driver: &Path, chromium: &Path, width: u32, height: u32) -> Browser {
        let browser = Browser::open(driver, chromium, width, height).await;
        browser.goto(&format!("{}/", daemon.base)).await;
        browser
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn run(&self, script: &str) -> Json {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something other than `null` or `false`, and returns
    /// it; on time-out, fails with `what` and a screenshot of the page.
    async fn until(&self, what: &str, script: &str) -> Json {
        let deadline = Instant::now() + BOUND;
        loop {
            match self.run(script).await {
                Json::Null | Json::Bool(false) => {}
                value => return value,
            }
            if Instant::now() > deadline {
                self.shoot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                let body = self.run("return document.body.innerText").await;
                panic!(
                    "{what}: not seen within {BOUND:?}; the page says:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The polls the page has rendered so far.
    async fn polls(&self) -> u64 {
        self.run("return Number(document.body.dataset.polls || 0)")
            .await
            .as_u64()
            .unwrap()
    }

    /// Waits for `n` more rendered polls.
    async fn polls_pass(&self, n: u64) {
        let target = self.polls().await + n;
        self.until(
            &format!("{n} more polls"),
            &format!("return Number(document.body.dataset.polls || 0) >= {target}"),
        )
        .await;
    }

    async fn shoot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

/// A script's JavaScript value for the text `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The selector of the card of `plugin`.
fn card(plugin: &str) -> String {
    format!("article.card[data-plugin={}]", js(plugin))
}

/// A script returning the card of `plugin`'s `field` text once its state is `state`.
fn when_state(plugin: &str, state: &str, field: &str) -> String {
    format!(
        "const c = document.querySelector({sel}); \
         return c && c.classList.contains({state}) ? c.querySelector({field}).textContent : null",
        sel = js(&card(plugin)),
        state = js(state),
        field = js(field),
    )
}

/// Copies `guest` into the watch directory as `name`, renamed into place as the docs
/// say to deploy.
fn deploy(dirs: &Dirs, name: &str, guest: &str) {
    dirs.put(name, &std::fs::read(guest).unwrap());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn short(version: &Json) -> String {
    version.as_str().unwrap()[..12].to_owned()
}

#[test]
fn the_page_follows_the_daemon_live() {
    let Some((driver, chromium)) = browser_tools() else {
        return;
    };
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO), ("swap.wasm", guests::SWAP_A)]);
    dirs.sidecar("hello.toml", "[matcher]\nall = true\n");
    let daemon = dirs.start(&["--no-stdin"]);
    runtime().block_on(async {
        let browser = Browser::on(&daemon, &driver, &chromium, 1280, 1000).await;

        // The plugins of the running daemon, with the version the API reports.
        let version = browser
            .until("hello running", &when_state("hello", "running", ".version"))
            .await;
        assert_eq!(version.as_str().unwrap(), short(&daemon.plugin("hello")["version"]));
        let world = browser.until("hello's world", &when_state("hello", "running", ".world")).await;
        assert_eq!(world, "batch-filter");
        browser
            .until("swap running", &when_state("swap", "running", ".name"))
            .await;
        // Everything from here on happens without a reload: this mark would be gone.
        browser.run("window.__sameDocument = true; return null").await;

        // Messages show as a rate and in the chart.
        for _ in 0..20 {
            daemon.json("POST", "/messages", Some(r#"{"type":"login","logger":"ann"}"#));
        }
        browser
            .until(
                "a rate for hello",
                &format!(
                    "const c = document.querySelector({}); \
                     return c && parseFloat(c.querySelector('.rate').textContent) > 0 && c.querySelector('canvas') !== null",
                    js(&card("hello"))
                ),
            )
            .await;
        browser
            .until(
                "20 messages received",
                "return document.getElementById('d-received').textContent === '20'",
            )
            .await;
        browser.shoot("1-running").await;

        // No layout shift while the numbers update: every card and figure keeps its box.
        let boxes = "return [...document.querySelectorAll('.card, .card .stats > div, .card dt, .figures > div, .chart')]\
                     .map(e => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })";
        let before = browser.run(boxes).await;
        for _ in 0..50 {
            daemon.json("POST", "/messages", Some(r#"{"type":"login","logger":"bo"}"#));
        }
        browser.polls_pass(2).await;
        let received = browser.run("return document.getElementById('d-received').textContent").await;
        assert_eq!(received, "70", "the figures were updated");
        assert_eq!(browser.run(boxes).await, before, "something moved while numbers changed");

        // A plugin dropped into the directory appears.
        deploy(&dirs, "echo.wasm", guests::ECHO);
        browser
            .until("echo appears", &when_state("echo", "running", ".name"))
            .await;

        // A hostile one turns red with its reason.
        dirs.sidecar(
            "infinite-loop.toml",
            "[matcher]\nall = true\n[limits]\nfuel = 2_000_000\nmax-consecutive-failures = 2\n",
        );
        deploy(&dirs, "infinite-loop.wasm", guests::INFINITE_LOOP);
        browser
            .until("infinite-loop appears", &when_state("infinite-loop", "running", ".name"))
            .await;
        for _ in 0..3 {
            daemon.json("POST", "/messages", Some(r#"{"type":"spin"}"#));
        }
        let reason = browser
            .until(
                "infinite-loop terminated",
                &when_state("infinite-loop", "terminated", ".reason-text"),
            )
            .await;
        let api_reason = daemon.plugin("infinite-loop")["reason"].clone();
        assert_eq!(reason, api_reason, "the reason in full");
        assert!(reason.as_str().unwrap().contains("fuel"), "{reason}");
        let color = browser
            .run(&format!(
                "return getComputedStyle(document.querySelector({})).borderLeftColor",
                js(&card("infinite-loop"))
            ))
            .await;
        assert_eq!(color, "rgb(180, 35, 24)", "a terminated card is red");
        browser
            .until(
                "the termination in the events",
                "return [...document.querySelectorAll('#events li.terminated')].some(li => li.textContent.includes('infinite-loop'))",
            )
            .await;
        browser.shoot("2-terminated").await;

        // A bad file shows its load failure.
        std::fs::write(dirs.plugins.path().join("broken.wasm"), b"\0asm but not really").unwrap();
        let failure = browser
            .until("broken fails to load", &when_state("broken", "failed-to-load", ".reason-text"))
            .await;
        assert_eq!(failure, daemon.plugin("broken")["load_error"]);
        assert!(failure.as_str().unwrap().contains("plugin `broken`"), "{failure}");
        browser.shoot("3-failed-load").await;

        // A swap shows the new version.
        let old = browser.until("swap's version", &when_state("swap", "running", ".version")).await;
        deploy(&dirs, "swap.wasm", guests::SWAP_B);
        let new = short(&Json::String(corral::content_version(&std::fs::read(guests::SWAP_B).unwrap())));
        assert_ne!(old, new);
        browser
            .until(
                "swap's new version shown",
                &format!(
                    "const c = document.querySelector({}); return c && c.querySelector('.version').textContent === {}",
                    js(&card("swap")),
                    js(&new)
                ),
            )
            .await;
        browser
            .until(
                "the swap in the events",
                "return [...document.querySelectorAll('#events li.replaced')].some(li => li.textContent.includes('swap'))",
            )
            .await;

        // The test-message form shows what the plugin emitted, as text.
        let echo = card("echo");
        browser.click(&format!("{echo} details.try summary")).await;
        browser
            .type_into(
                &format!("{echo} .try-input"),
                r#"{"type":"try","payload":"<b id=\"from-payload\">bold</b>"}"#,
            )
            .await;
        browser.click(&format!("{echo} .try-send")).await;
        let emitted = browser
            .until(
                "echo's emitted message",
                &format!("const pre = document.querySelector({}); return pre && pre.textContent", js(&format!("{echo} .try-result pre.emitted"))),
            )
            .await;
        let emitted: Json = serde_json::from_str(emitted.as_str().unwrap()).unwrap();
        assert_eq!(emitted["type"], "try");
        assert_eq!(emitted["payload"], r#"<b id="from-payload">bold</b>"#);
        assert_eq!(browser.run("return document.getElementById('from-payload')").await, Json::Null);
        browser.shoot("4-test-message").await;

        // …or the typed reason it was refused for.
        let lost = card("infinite-loop");
        browser.click(&format!("{lost} details.try summary")).await;
        browser.click(&format!("{lost} .try-send")).await;
        let refusal = browser
            .until(
                "infinite-loop's refusal",
                &format!("const pre = document.querySelector({}); return pre && pre.textContent", js(&format!("{lost} .try-result pre.refusal"))),
            )
            .await;
        assert!(refusal.as_str().unwrap().contains("plugin `infinite-loop` is terminated"), "{refusal}");

        // The reload button rescans the directory.
        std::fs::remove_file(dirs.plugins.path().join("broken.wasm")).unwrap();
        browser.click("#reload").await;
        browser
            .until(
                "the reload's answer",
                "return document.getElementById('reload-result').textContent.startsWith('reloaded at')",
            )
            .await;

        assert_eq!(browser.run("return window.__sameDocument === true").await, true, "the page was reloaded");

        // On a phone: one column, nothing wider than the screen.
        browser.client.set_window_size(390, 844).await.unwrap();
        browser.polls_pass(1).await;
        let overflow = browser
            .run("return document.documentElement.scrollWidth - window.innerWidth")
            .await;
        assert!(overflow.as_i64().unwrap() <= 0, "wider than the phone by {overflow} px");
        browser.shoot("5-phone").await;
        browser.close().await;
    });
}

#[test]
fn markup_in_a_reason_or_a_message_is_shown_as_text() {
    let Some((driver, chromium)) = browser_tools() else {
        return;
    };
    let dirs = Dirs::new(&[("fails.wasm", guests::FAILS)]);
    dirs.sidecar("fails.toml", "[matcher]\nall = true\n");
    let daemon = dirs.start(&["--no-stdin"]);
    // `fails` fails with the message's type in its reason: five in a row terminate it.
    let hostile = r#"<img src=x onerror="window.__injected=1"><b id="injected">bold</b><script>window.__injected=2</script>"#;
    let message = json!({ "type": hostile }).to_string();
    runtime().block_on(async {
        let browser = Browser::on(&daemon, &driver, &chromium, 1280, 900).await;
        browser.until("fails running", &when_state("fails", "running", ".name")).await;
        for _ in 0..5 {
            daemon.json("POST", "/messages", Some(&message));
        }
        let reason = browser
            .until("fails terminated", &when_state("fails", "terminated", ".reason-text"))
            .await;
        assert!(reason.as_str().unwrap().contains(hostile), "{reason}");
        assert_eq!(reason, daemon.plugin("fails")["reason"]);
        // The markup is text: no element was made of it, nothing ran.
        let made = browser
            .run(
                "return [document.getElementById('injected') !== null, \
                 document.querySelectorAll('main img, main script:not([src])').length, \
                 window.__injected === undefined]",
            )
            .await;
        assert_eq!(made, json!([false, 0, true]));
        // The termination is listed in the events with the same text.
        browser
            .until(
                "the termination in the events",
                &format!(
                    "return [...document.querySelectorAll('#events li.terminated')].some(li => li.textContent.includes({}))",
                    js(hostile)
                ),
            )
            .await;
        browser.shoot("6-markup-as-text").await;
        browser.close().await;
    });
}

#[test]
fn with_a_token_the_page_asks_for_it_once_and_sends_it_as_a_header() {
    let Some((driver, chromium)) = browser_tools() else {
        return;
    };
    const TOKEN: &str = "s3cret-t0ken";
    let dirs = Dirs::new(&[("greeter.wasm", guests::HELLO)]);
    let daemon: Daemon = dirs.start(&["--no-stdin", "--token", TOKEN]);

    // Data needs the token; the page and its files, which hold none, do not.
    let agent = agent();
    for path in ["/status", "/plugins", "/metrics", "/nowhere"] {
        let response = agent.get(format!("{}{path}", daemon.base)).call().unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} without the token");
    }
    for path in [
        "/",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
        "/dashboard/uPlot.iife.min.js",
    ] {
        let mut response = agent.get(format!("{}{path}", daemon.base)).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let csp = response
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            csp.is_some_and(|v| v.contains("script-src 'self'")),
            "{path} has no CSP"
        );
        let body = response.body_mut().read_to_string().unwrap();
        assert!(!body.contains("greeter"), "{path} holds data");
    }
    let (status, _) = daemon.request("GET", "/status", None);
    assert_eq!(status, 200, "with the token");
    // `greeter` has no matcher: a message sent to the daemon is wanted by no plugin.
    daemon.json("POST", "/messages", Some(r#"{"type":"nobody.wants.this"}"#));
    assert_eq!(daemon.get("/status")["unmatched"], 1);

    runtime().block_on(async {
        let browser = Browser::on(&daemon, &driver, &chromium, 1000, 800).await;
        browser
            .until(
                "the token prompt",
                "return !document.getElementById('login').hidden",
            )
            .await;
        browser.shoot("7-token-prompt").await;

        // A wrong token is refused, and asked for again.
        browser.type_into("#token", "not-the-token").await;
        browser.click("#login-submit").await;
        browser
            .until(
                "the refusal",
                "return !document.getElementById('login').hidden && \
                 document.getElementById('login-error').textContent.includes('refused')",
            )
            .await;

        // The right one opens the dashboard.
        browser.type_into("#token", TOKEN).await;
        browser.click("#login-submit").await;
        browser
            .until("greeter running", &when_state("greeter", "running", ".name"))
            .await;
        // The daemon's figures include the message no plugin matched.
        browser
            .until(
                "one unmatched message",
                "return document.getElementById('d-unmatched').textContent === '1'",
            )
            .await;
        assert_eq!(
            browser
                .run("return document.getElementById('login').hidden")
                .await,
            true
        );
        // Kept in this tab's session storage, never in the URL.
        let kept = browser
            .run("return [sessionStorage.getItem('corral-admin-token'), location.href]")
            .await;
        assert_eq!(kept[0], TOKEN);
        assert!(!kept[1].as_str().unwrap().contains(TOKEN), "{kept}");

        // Asked once: a reload of the page goes on with it.
        browser.goto(&format!("{}/", daemon.base)).await;
        browser
            .until(
                "greeter after a reload",
                &when_state("greeter", "running", ".name"),
            )
            .await;
        assert_eq!(
            browser
                .run("return document.getElementById('login').hidden")
                .await,
            true
        );

        // The header carries it for the test-message form too.
        let greeter = card("greeter");
        browser.click(&format!("{greeter} details.try summary")).await;
        browser
            .type_into(
                &format!("{greeter} .try-input"),
                r#"{"type":"login","logger":"ann"}"#,
            )
            .await;
        browser.click(&format!("{greeter} .try-send")).await;
        let emitted = browser
            .until(
                "the greeting",
                &format!(
                    "const pre = document.querySelector({}); return pre && pre.textContent",
                    js(&format!("{greeter} .try-result pre.emitted"))
                ),
            )
            .await;
        assert!(emitted.as_str().unwrap().contains("Hello, ann!"), "{emitted}");
        browser.shoot("8-with-token").await;
        browser.close().await;
    });
    assert!(!daemon.log().contains(TOKEN), "the token reached the log");
}
