//! Helpers for the real-browser tests (`tests/browser.rs`): a headless Chromium driven over
//! CDP by `headless_chrome`, a small JS harness that records WebSocket events into
//! `window.__events`, and where failures leave their screenshots. (The certificate and the
//! `wss://` client are in [`crate::tls`], the Rust clients in [`crate::ws`].)
//!
//! Chromium must be at [`CHROMIUM`] (Debian's `chromium` package, which `.ci/run` installs).
//! Without it the tests fail with a message saying how to install it; they never skip.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Target::CreateTarget;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

use crate::temp::TempDir;

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any single wait on the browser or the server may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Flags from the issue, on top of what `headless_chrome` passes itself.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
];

/// One browser at a time: several Chromium instances starting side by side on a small CI
/// machine make every timeout in here tight for no gain (each test takes a few seconds).
static BROWSER_LOCK: Mutex<()> = Mutex::new(());

/// A headless Chromium with a fresh profile. Killed on drop (before its profile is removed
/// and the next test may start one).
pub struct Chrome {
    /// Always `Some` until dropped.
    browser: Option<Browser>,
    profile: TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // Closes and kills Chromium (waiting for its main process).
        drop(self.browser.take());
        // Its helper processes outlive the main one briefly and may still write into the
        // profile: remove it until it stays gone (for at most ~2 s).
        let path = self.profile.path().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut gone_since: Option<Instant> = None;
        while Instant::now() < deadline {
            let _ = std::fs::remove_dir_all(&path);
            if path.exists() {
                gone_since = None;
            } else if let Some(t) = gone_since {
                if t.elapsed() >= Duration::from_millis(200) {
                    break;
                }
            } else {
                gone_since = Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Chrome {
    /// Starts Chromium. `ignore_certificate_errors` adds `--ignore-certificate-errors` (for
    /// the self-signed `wss://` case). Panics, saying how to install it, when Chromium is not
    /// at [`CHROMIUM`].
    pub fn launch(ignore_certificate_errors: bool) -> Chrome {
        let path = Path::new(CHROMIUM);
        assert!(
            path.is_file(),
            "Chromium not found at {CHROMIUM}: the browser tests need it. Install it with \
             `apt-get update && apt-get install -y chromium` (Debian's package; .ci/run does \
             this in CI)."
        );
        // A test that panicked while holding the lock leaves it poisoned; the browser it
        // held is gone all the same.
        let guard = BROWSER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let profile = TempDir::new("chromium-profile");
        let mut args: Vec<&OsStr> = CHROMIUM_ARGS.iter().map(OsStr::new).collect();
        if ignore_certificate_errors {
            args.push(OsStr::new("--ignore-certificate-errors"));
        }
        let options = LaunchOptions {
            headless: true,
            sandbox: false,
            path: Some(path.to_path_buf()),
            user_data_dir: Some(profile.path().to_path_buf()),
            args,
            ignore_certificate_errors,
            window_size: Some((1280, 900)),
            idle_browser_timeout: Duration::from_secs(120),
            ..LaunchOptions::default()
        };
        let browser = Browser::new(options)
            .unwrap_or_else(|e| panic!("cannot start Chromium ({CHROMIUM}): {e:#}"));
        Chrome {
            browser: Some(browser),
            profile,
            _one_at_a_time: guard,
        }
    }

    /// A new tab showing `url`, loaded (`document.readyState` is `complete`).
    ///
    /// Waits on the document itself rather than on `headless_chrome`'s navigation wait,
    /// which waits for the network to be almost idle (half a second or more per page).
    pub fn page(&self, url: &str) -> Page {
        let tab = self
            .browser
            .as_ref()
            .expect("browser")
            .new_tab_with_options(CreateTarget {
                url: url.to_string(),
                left: None,
                top: None,
                width: None,
                height: None,
                window_state: None,
                browser_context_id: None,
                enable_begin_frame_control: None,
                new_window: None,
                background: None,
                for_tab: None,
                hidden: None,
            })
            .unwrap_or_else(|e| panic!("cannot open a tab for {url}: {e:#}"));
        tab.set_default_timeout(WAIT);
        let deadline = Instant::now() + WAIT;
        let mut last;
        loop {
            // Errors are expected while the first document is replaced.
            match tab.evaluate("location.href + ' ' + document.readyState", false) {
                Ok(obj) => {
                    last = obj.value.map(|v| v.to_string()).unwrap_or_default();
                    if last == format!("\"{url} complete\"") {
                        return Page { tab };
                    }
                }
                Err(e) => last = format!("error: {e:#}"),
            }
            assert!(
                Instant::now() < deadline,
                "{url} not loaded within {WAIT:?}; last seen: {last}"
            );
            thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Installed into a page by [`Page::install_harness`]: `__herald.open(name, url, binaryType)`
/// opens a WebSocket kept in `__herald.sockets[name]`, and every event of every socket is
/// appended, in order, to `window.__events` as `{ws, type, …}`:
/// `open`; `error`; `close` with `code`, `reason`, `wasClean`; `message` with `kind` `text`
/// (`data`), `arraybuffer` or `blob` (`hex`: the bytes in lowercase hex).
/// A Blob's bytes are read asynchronously; a promise chain keeps the events in arrival order.
const HARNESS: &str = r#"
(() => {
  if (window.__herald) return true;
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  window.__events = [];
  let chain = Promise.resolve();
  const push = (ev) => {
    chain = chain.then(() => ev).then(
      (e) => { window.__events.push(e); },
      (err) => { window.__events.push({ type: "harness-error", error: String(err) }); });
  };
  window.__herald = {
    sockets: {},
    open(name, url, binaryType) {
      const ws = new WebSocket(url);
      if (binaryType) ws.binaryType = binaryType;
      this.sockets[name] = ws;
      ws.onopen = () => push({ ws: name, type: "open" });
      ws.onerror = () => push({ ws: name, type: "error" });
      ws.onclose = (e) => push({ ws: name, type: "close", code: e.code, reason: e.reason, wasClean: e.wasClean });
      ws.onmessage = (e) => {
        const d = e.data;
        if (typeof d === "string") push({ ws: name, type: "message", kind: "text", data: d });
        else if (d instanceof ArrayBuffer) push({ ws: name, type: "message", kind: "arraybuffer", hex: hex(d) });
        else if (d instanceof Blob) push(d.arrayBuffer().then((b) => ({ ws: name, type: "message", kind: "blob", hex: hex(b) })));
        else push({ ws: name, type: "message", kind: "unknown: " + Object.prototype.toString.call(d) });
      };
      return ws.url;
    },
    events(name) { return window.__events.filter((e) => e.ws === name); },
    // Data messages, without the `sync:` texts of the subscription handshakes.
    messages(name) {
      return this.events(name).filter((e) => e.type === "message" && !(e.kind === "text" && e.data.startsWith("sync:")));
    },
  };
  return true;
})()
"#;

/// A browser tab.
pub struct Page {
    pub tab: Arc<Tab>,
}

impl Page {
    /// Evaluates a JS expression and returns its value, passed through `JSON.stringify`
    /// (`undefined` comes back as `null`). A JS exception fails the test with its stack.
    pub fn eval(&self, expr: &str) -> Value {
        let js = format!(
            "(() => {{ try {{ const v = ({expr}); return JSON.stringify({{ ok: v === undefined ? null : v }}); }} \
             catch (e) {{ return JSON.stringify({{ err: String((e && e.stack) || e) }}); }} }})()"
        );
        let result = self
            .tab
            .evaluate(&js, false)
            .unwrap_or_else(|e| panic!("evaluating `{expr}` failed: {e:#}"));
        let text = match result.value {
            Some(Value::String(s)) => s,
            other => panic!(
                "evaluating `{expr}` gave no JSON string: {other:?} ({:?})",
                result.description
            ),
        };
        let mut parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("evaluating `{expr}`: bad JSON {text:?}: {e}"));
        if let Some(err) = parsed.get("err") {
            panic!("JS exception in `{expr}`: {}", err.as_str().unwrap_or(""));
        }
        parsed["ok"].take()
    }

    /// Polls the JS expression `cond` every 25 ms until it is truthy; after [`WAIT`] the test
    /// fails with `what` and the value of `context` (a JS expression, for the diagnostics).
    pub fn wait_for(&self, cond: &str, what: &str, context: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.eval(&format!("!!({cond})"));
            if v == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let ctx = self.eval(context).to_string();
                panic!(
                    "timed out after {WAIT:?} waiting for {what} (`{cond}`); {context} = {}",
                    truncate(&ctx, 4000)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Installs [`HARNESS`] (once per document).
    pub fn install_harness(&self) {
        assert_eq!(self.eval(HARNESS), Value::Bool(true));
    }

    /// Opens WebSocket `name` to `url` (with `binaryType` when given).
    pub fn open_ws(&self, name: &str, url: &str, binary_type: Option<&str>) {
        let bt = binary_type.map_or("null".to_string(), js_string);
        self.eval(&format!(
            "__herald.open({}, {}, {bt})",
            js_string(name),
            js_string(url)
        ));
    }

    /// Every event recorded for socket `name` so far.
    pub fn events(&self, name: &str) -> Vec<Value> {
        match self.eval(&format!("__herald.events({})", js_string(name))) {
            Value::Array(v) => v,
            other => panic!("__herald.events gave {other:?}"),
        }
    }

    /// Data messages for socket `name` so far (without `sync:` texts).
    pub fn messages(&self, name: &str) -> Vec<Value> {
        match self.eval(&format!("__herald.messages({})", js_string(name))) {
            Value::Array(v) => v,
            other => panic!("__herald.messages gave {other:?}"),
        }
    }

    /// Waits until socket `name` is open (and fails early if it closed instead).
    pub fn wait_open(&self, name: &str) {
        let n = js_string(name);
        self.wait_for(
            &format!("__herald.events({n}).some((e) => e.type === 'open' || e.type === 'close')"),
            &format!("socket {name} to open"),
            &format!("__herald.events({n})"),
        );
        let events = self.events(name);
        assert_eq!(
            events.first().and_then(|e| e["type"].as_str()),
            Some("open"),
            "socket {name} did not open: {events:?}"
        );
    }

    /// Makes sure socket `name`'s subscription is in effect everywhere: sends `sync:ID` and
    /// waits for its own echo (see `crate::ws::sync`).
    pub fn sync(&self, name: &str) {
        let n = js_string(name);
        let mine = js_string(&format!("sync:{name}"));
        self.eval(&format!("__herald.sockets[{n}].send({mine})"));
        self.wait_for(
            &format!(
                "__herald.events({n}).some((e) => e.type === 'message' && e.kind === 'text' && e.data === {mine})"
            ),
            &format!("the echo of {mine} on socket {name}"),
            &format!("__herald.events({n})"),
        );
    }

    /// Waits until socket `name` has seen at least `n` data messages (not counting `sync:`).
    pub fn wait_messages(&self, name: &str, n: usize) -> Vec<Value> {
        let s = js_string(name);
        self.wait_for(
            &format!("__herald.messages({s}).length >= {n}"),
            &format!("{n} messages on socket {name}"),
            &format!("__herald.events({s})"),
        );
        self.messages(name)
    }

    /// Waits until socket `name` has closed; returns all its events.
    pub fn wait_closed(&self, name: &str) -> Vec<Value> {
        let s = js_string(name);
        self.wait_for(
            &format!("__herald.events({s}).some((e) => e.type === 'close')"),
            &format!("socket {name} to close"),
            &format!("__herald.events({s})"),
        );
        self.events(name)
    }

    /// A PNG of the visible page.
    pub fn screenshot_png(&self) -> Vec<u8> {
        use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
        self.tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .unwrap_or_else(|e| panic!("screenshot failed: {e:#}"))
    }
}

/// A JS string literal (JSON is valid JS for strings).
pub fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Lowercase hex, as the harness writes it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic test bytes; [`JS_PATTERN`] makes the same ones in the page.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed).wrapping_add(i >> 8) & 0xff) as u8)
        .collect()
}

/// JS for [`pattern`]: `__pattern(len, seed)` gives a `Uint8Array`.
pub const JS_PATTERN: &str = "window.__pattern = (len, seed) => { const a = new Uint8Array(len); \
     for (let i = 0; i < len; i++) a[i] = (Math.imul(i, 31) + seed + (i >>> 8)) & 0xff; return a; }";

/// the path.
pub fn save_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let path = dir.join(name);
    let mut f =
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
