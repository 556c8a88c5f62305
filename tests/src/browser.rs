//! A real headless Chromium driven over the DevTools protocol: open a page, run JavaScript in
//! it, wait for a condition. Enough for the browser tests, with no driver binary to match.
//!
//! Chromium comes from the system packages (`scripts/test` installs Debian's `chromium`), or
//! from `CHROMIUM_BIN`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{Message, WebSocket};

/// The Chromium executable: `CHROMIUM_BIN`, else the first of the usual names on `PATH`.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// One headless Chromium with one page; killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Uncaught exceptions the page threw, as the console would show them.
    pub exceptions: Vec<String>,
}

const STEP: Duration = Duration::from_secs(30);

impl Browser {
    pub fn launch() -> anyhow::Result<Browser> {
        let executable = chromium().context("no Chromium: install Debian's chromium or set CHROMIUM_BIN")?;
        let profile = tempfile::tempdir()?;
        // The flags keep it off the network (this machine refuses outside connections) and
        // out of first-run work.
        let mut child = Command::new(&executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", executable.display()))?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let Ok(browser_url) = rx.recv_timeout(STEP) else {
            let _ = child.kill();
            bail!("{} did not open its DevTools port", executable.display());
        };
        // The page target's own socket, from the browser's list of targets.
        let port = browser_url.split(':').nth(2).and_then(|rest| rest.split('/').next()).context("DevTools URL")?;
        let targets: Vec<Value> =
            reqwest::blocking::get(format!("http://127.0.0.1:{port}/json/list"))?.error_for_status()?.json()?;
        let page = targets
            .iter()
            .find(|target| target["type"] == "page")
            .and_then(|target| target["webSocketDebuggerUrl"].as_str())
            .context("Chromium has no page")?;
        let (socket, _) = tokio_tungstenite::tungstenite::connect(page)?;
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(STEP))?;
        }
        let mut browser = Browser { child, _profile: profile, socket, next_id: 0, exceptions: Vec::new() };
        browser.call("Runtime.enable", json!({}))?;
        browser.call("Page.enable", json!({}))?;
        Ok(browser)
    }

    /// Sends a DevTools command and waits for its result; the events read meanwhile are noted.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket.send(Message::text(command.to_string()))?;
        loop {
            let message = self.socket.read().with_context(|| format!("no answer to {method}"))?;
            let Message::Text(text) = message else { continue };
            let message: Value = serde_json::from_str(&text)?;
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(message["result"].clone());
            }
            if message["method"] == "Runtime.exceptionThrown" {
                let details = &message["params"]["exceptionDetails"];
                let text = details["exception"]["description"].as_str().or(details["text"].as_str());
                self.exceptions.push(text.unwrap_or("an exception").to_owned());
            }
        }
    }

    /// Opens `url` and waits until the document has loaded.
    pub fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({ "url": url }))?;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", STEP)?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let params = json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let result = self.call("Runtime.evaluate", params)?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"].as_str().or(details["text"].as_str());
            bail!("`{expression}` threw: {}", text.unwrap_or("an exception"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is truthy (not null, false, 0 or ""), and returns it
    /// (an element as `true`).
    pub fn wait_for(&mut self, expression: &str, deadline: Duration) -> anyhow::Result<Value> {
        let until = Instant::now() + deadline;
        let valued =
            format!("(async () => {{ const v = await ({expression}); return v instanceof Node ? true : v; }})()");
        loop {
            let value = self.eval(&valued)?;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("");
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= until {
                let page = self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''").unwrap_or_default();
                let shot = std::env::temp_dir().join(format!("skyglass-browser-{}.png", std::process::id()));
                let saved = self.screenshot().and_then(|png| Ok(std::fs::write(&shot, png)?)).is_ok();
                let shot = if saved { format!(" (screenshot: {})", shot.display()) } else { String::new() };
                return Err(anyhow!(
                    "waited {deadline:?} for `{expression}` (last {value}){shot}; the page shows:\n{page}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page as it looks now.
    pub fn screenshot(&mut self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = shot["data"].as_str().context("screenshot data")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }
}

impl std::ops::Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
