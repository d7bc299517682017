//! A headless Chromium driven over the DevTools protocol, for tests of pages the binary
//! serves (the dashboard): launch with a fresh profile, open a page, evaluate JavaScript in
//! it, answer chosen requests in its place, take and decode screenshots.
//!
//! Chromium is Debian's `chromium` package. Without it a browser test fails and says how
//! to install it (`.ci/run` does): a page test that passes because no browser ran would
//! hide a broken page.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::within;

/// The viewport the page is rendered in, in CSS pixels (device scale factor 1).
pub(crate) const VIEWPORT: (u32, u32) = (1280, 1600);

/// How long the page gets to show a fact: a few of its 1 s polls, with room for two busy
/// cores.
pub(crate) const PAGE_LIMIT: Duration = Duration::from_secs(20);

/// The flags the machine's notes give for Chromium here: without the network ones it keeps
/// trying to reach Google's hosts through a closed network.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
];

const MISSING_CHROMIUM: &str = "browser tests (the dashboard, drill reports) need a headless Chromium: install Debian's \
     `chromium` package (apt-get install chromium; .ci/run installs it), or point \
     SWITCHYARD_CHROMIUM at a Chromium binary";

/// `SWITCHYARD_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
fn chromium_binary() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("SWITCHYARD_CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium of the test's own, with a fresh profile. Dropping it stops the
/// browser by its PID (SIGTERM, so it takes its renderer and helper processes down; SIGKILL
/// after 3 s) and removes the profile.
pub(crate) struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    pub(crate) fn launch() -> Chromium {
        let binary = chromium_binary().unwrap_or_else(|| panic!("{MISSING_CHROMIUM}"));
        static LAUNCHES: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "switchyard-dashboard-{}-{}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = File::create(profile.join("chromium-stderr.log")).unwrap();
        let child = Command::new(&binary)
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Left in the test's process group: when nextest stops a hung test it signals the
            // group, and the browser goes with it even though no Drop runs.
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}; {MISSING_CHROMIUM}", binary.display())
            });
        Chromium { child, profile }
    }

    /// What Chromium wrote on stderr so far (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(self.profile.join("chromium-stderr.log")).unwrap_or_default()
    }

    /// The browser's DevTools WebSocket, from the `DevToolsActivePort` file Chromium writes
    /// into its profile once it listens (`port\n/devtools/browser/<id>`).
    pub(crate) async fn devtools(&mut self) -> DevTools {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(Ok(port)), Some(path)) =
                    (lines.next().map(str::parse::<u16>), lines.next())
                {
                    break (port, path.to_owned());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stream = within(TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = within(tokio_tungstenite::client_async(url, stream))
            .await
            .expect("devtools websocket handshake");
        DevTools {
            socket,
            next_id: 0,
            session: None,
            stand_ins: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// An answer the browser gives the page instead of the balancer's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StandIn {
    /// The end of the request URL.
    pub(crate) path: &'static str,
    /// The status to answer.
    pub(crate) status: u16,
    /// The body to answer (served as `application/json`).
    pub(crate) body: &'static str,
}

/// A DevTools protocol connection to the browser, with the page's session once attached.
pub(crate) struct DevTools {
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
    session: Option<String>,
    /// Answers (path, status, JSON body) given instead of the balancer's (through `Fetch`
    /// interception): views the balancer does not have yet, or failures.
    stand_ins: Vec<StandIn>,
    /// Script exceptions and console errors the page produced (network errors aside: the
    /// page probes `/api/v1/reloads`, which may answer 404).
    problems: Vec<String>,
}

impl DevTools {
    /// Sends one command and returns its result or the protocol's error; events arriving
    /// meanwhile are skipped.
    pub(crate) async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        within(self.socket.send(Message::text(command.to_string())))
            .await
            .unwrap();
        loop {
            let frame = within(self.socket.next())
                .await
                .expect("devtools connection closed")
                .expect("devtools read");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            if reply.get("method").is_some() {
                self.on_event(&reply).await;
                continue;
            }
            if reply["id"] != json!(id) {
                continue;
            }
            return match reply.get("error") {
                Some(error) => Err(format!("devtools {method} failed: {error}")),
                None => Ok(reply["result"].clone()),
            };
        }
    }

    /// Notes problems; answers intercepted requests with their stand-in (others go on to
    /// the balancer).
    async fn on_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str().unwrap_or_default() {
            "Runtime.exceptionThrown" => self
                .problems
                .push(format!("exception: {}", params["exceptionDetails"])),
            "Log.entryAdded"
                if params["entry"]["level"] == "error"
                    && params["entry"]["source"] != "network" =>
            {
                self.problems.push(format!("console: {}", params["entry"]));
            }
            "Fetch.requestPaused" => {
                let url = params["request"]["url"].as_str().unwrap_or_default();
                let stand_in = self
                    .stand_ins
                    .iter()
                    .find(|s| url.ends_with(s.path))
                    .map(|s| (s.status, s.body));
                let (method, reply) = match stand_in {
                    Some((status, body)) => (
                        "Fetch.fulfillRequest",
                        json!({
                            "requestId": params["requestId"],
                            "responseCode": status,
                            "responseHeaders": [{ "name": "Content-Type", "value": "application/json" }],
                            "body": base64::engine::general_purpose::STANDARD.encode(body),
                        }),
                    ),
                    None => (
                        "Fetch.continueRequest",
                        json!({ "requestId": params["requestId"] }),
                    ),
                };
                self.next_id += 1;
                let mut command = json!({ "id": self.next_id, "method": method, "params": reply });
                if let Some(session) = &self.session {
                    command["sessionId"] = json!(session);
                }
                within(self.socket.send(Message::text(command.to_string())))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }

    /// Fails the test if the page threw or logged an error (a CSP refusal included).
    pub(crate) fn assert_no_problems(&self) {
        assert!(
            self.problems.is_empty(),
            "the page reported:\n{}",
            self.problems.join("\n")
        );
    }

    /// Sends one command and returns its result.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Opens `url` in a new tab of VIEWPORT size and attaches to it; requests for a path of
    /// `stand_ins` get its answer instead of the balancer's.
    pub(crate) async fn open(&mut self, url: &str, stand_ins: &[StandIn]) {
        let target = self
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        self.call("Runtime.enable", json!({})).await;
        self.call("Log.enable", json!({})).await;
        if !stand_ins.is_empty() {
            self.stand_ins = stand_ins.to_vec();
            let patterns: Vec<Value> = stand_ins
                .iter()
                .map(|s| json!({ "urlPattern": format!("*{}", s.path) }))
                .collect();
            self.call("Fetch.enable", json!({ "patterns": patterns }))
                .await;
        }
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            &format!("{url} loaded"),
            &format!("location.href === {url:?} && document.readyState === 'complete'"),
        )
        .await;
    }

    /// The value of a JavaScript expression in the page (promises awaited), or what went
    /// wrong: an exception, or no document to run in (between two pages).
    pub(crate) async fn try_evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let result = self
            .try_call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        match result.get("exceptionDetails") {
            Some(exception) => Err(format!("page threw evaluating {expression}: {exception}")),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// The value of a JavaScript expression in the page.
    pub(crate) async fn evaluate(&mut self, expression: &str) -> Value {
        self.try_evaluate(expression)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Polls `expression` until it is neither null nor false, failing after PAGE_LIMIT with
    /// what the page showed. An exception counts as "not yet" (the page may still be
    /// loading), and the last one is reported.
    pub(crate) async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PAGE_LIMIT;
        let mut last_error = String::new();
        loop {
            match self.try_evaluate(expression).await {
                Ok(value) if !value.is_null() && value != json!(false) => return value,
                Ok(_) => {}
                Err(error) => last_error = error,
            }
            if Instant::now() > deadline {
                let shown = self
                    .try_evaluate("document.body ? document.body.innerText : '(no body)'")
                    .await;
                panic!(
                    "the page did not show {what} within {PAGE_LIMIT:?}; last error: {last_error}; it shows:\n{}",
                    shown.unwrap_or_default().as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the viewport.
    pub(crate) async fn screenshot(&mut self) -> Vec<u8> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

/// Where screenshots are kept for people: `<target dir>/<name>/`, found from the test
/// binary's own path (`<target dir>/<profile>/deps/it-<hash>`).
pub(crate) fn screenshot_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A decoded screenshot, 8-bit RGB(A).
pub(crate) struct Picture {
    pub(crate) width: u32,
    pub(crate) height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Picture {
    pub(crate) fn decode(png_bytes: &[u8]) -> Picture {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG size")];
        let info = reader.next_frame(&mut pixels).expect("a PNG frame");
        pixels.truncate(info.buffer_size());
        Picture {
            width: info.width,
            height: info.height,
            channels: info.color_type.samples(),
            pixels,
        }
    }

    /// The RGB colours of the pixels inside a CSS-pixel rectangle (clipped to the picture).
    pub(crate) fn region(&self, rect: &Value) -> Vec<[u8; 3]> {
        let edge = |key: &str| rect[key].as_f64().unwrap().max(0.0) as u32;
        let (left, top) = (edge("left"), edge("top"));
        let right = edge("right").min(self.width);
        let bottom = edge("bottom").min(self.height);
        let mut colours = Vec::new();
        for y in top..bottom {
            for x in left..right {
                let at = (y as usize * self.width as usize + x as usize) * self.channels;
                colours.push([self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]);
            }
        }
        colours
    }
}

/// How many of `pixels` are within 3 per channel of `colour` (antialiasing aside, a
/// badge's background is painted in exactly its CSS colour).
pub(crate) fn pixels_of(pixels: &[[u8; 3]], colour: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 3))
        .count()
}
