//! The dashboard (`GET /` on the admin listener) in a real headless Chromium: the page is
//! loaded from a running balancer, read through the DevTools protocol (`Runtime.evaluate`
//! on the live DOM) and photographed (`Page.captureScreenshot`), so what is checked is what
//! a person would see, script and style sheet included.
//!
//! Chromium is Debian's `chromium` package. Without it these tests fail and say how to
//! install it (`.ci/run` does): a dashboard test that passes because no browser ran would
//! hide a broken page.
#![allow(clippy::unwrap_used)]

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

use crate::support::*;

/// The viewport the page is rendered in, in CSS pixels (device scale factor 1).
const VIEWPORT: (u32, u32) = (1280, 1600);

/// How long the page gets to show a fact: a few of its 1 s polls, with room for two busy
/// cores.
const PAGE_LIMIT: Duration = Duration::from_secs(20);

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

const MISSING_CHROMIUM: &str = "the dashboard tests need a headless Chromium: install Debian's \
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
struct Chromium {
    child: Child,
    profile: PathBuf,
}

impl Chromium {
    fn launch() -> Chromium {
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
    async fn devtools(&mut self) -> DevTools {
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
struct StandIn {
    /// The end of the request URL.
    path: &'static str,
    status: u16,
    body: &'static str,
}

/// A DevTools protocol connection to the browser, with the page's session once attached.
struct DevTools {
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
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
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
    fn assert_no_problems(&self) {
        assert!(
            self.problems.is_empty(),
            "the page reported:\n{}",
            self.problems.join("\n")
        );
    }

    /// Sends one command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Opens `url` in a new tab of VIEWPORT size and attaches to it; requests for a path of
    /// `stand_ins` get its answer instead of the balancer's.
    async fn open(&mut self, url: &str, stand_ins: &[StandIn]) {
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
    async fn try_evaluate(&mut self, expression: &str) -> Result<Value, String> {
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
    async fn evaluate(&mut self, expression: &str) -> Value {
        self.try_evaluate(expression)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Polls `expression` until it is neither null nor false, failing after PAGE_LIMIT with
    /// what the page showed. An exception counts as "not yet" (the page may still be
    /// loading), and the last one is reported.
    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
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

    /// How many polls the page has rendered.
    async fn refreshes(&mut self) -> u64 {
        let count = self
            .evaluate("Number(document.body.getAttribute('data-refresh-count'))")
            .await;
        count.as_u64().unwrap_or(0)
    }

    /// A PNG of the viewport.
    async fn screenshot(&mut self) -> Vec<u8> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

/// Every endpoint row the page shows, as `{cluster, endpoint, state, badge, text}`.
const ENDPOINT_ROWS: &str = "Array.from(document.querySelectorAll('#clusters tr[data-endpoint]'))\
    .map(r => ({ cluster: r.dataset.cluster, endpoint: r.dataset.endpoint, state: r.dataset.state,\
                 badge: r.querySelector('[data-role=state]').textContent, text: r.innerText }))";

/// The state badge of endpoint `endpoint` of `cluster` once it reads `state`, else null.
fn endpoint_in_state(cluster: &str, endpoint: &str, state: &str) -> String {
    format!(
        "(() => {{ const rows = {ENDPOINT_ROWS}; \
           const row = rows.find(r => r.cluster === {cluster:?} && r.endpoint === {endpoint:?}); \
           return row && row.state === {state:?} && row.badge === {state:?} ? row : null; }})()"
    )
}

/// An `endpoints = [...]` value with names and weights.
fn weighted_endpoints(entries: &[(std::net::SocketAddr, &str, u32)]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(address, name, weight)| {
            format!("{{ address = \"{address}\", name = \"{name}\", weight = {weight} }}")
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Where screenshots are kept for people: `<target dir>/dashboard/`, found from the test
/// binary's own path (`<target dir>/<profile>/deps/it-<hash>`).
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A decoded screenshot, 8-bit RGB(A).
struct Picture {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Picture {
    fn decode(png_bytes: &[u8]) -> Picture {
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
    fn region(&self, rect: &Value) -> Vec<[u8; 3]> {
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
fn pixels_of(pixels: &[[u8; 3]], colour: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 3))
        .count()
}

/// Requests at a steady pace through `web` until dropped, so the page has rates and
/// percentiles to show.
struct Traffic(tokio::task::JoinHandle<()>);

impl Traffic {
    fn start(web: std::net::SocketAddr, paths: &'static [&'static str]) -> Traffic {
        Traffic(tokio::spawn(async move {
            let client = keepalive_client();
            for i in 0.. {
                let path = paths[i % paths.len()];
                let _ = client.get(format!("http://{web}{path}")).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_endpoint_and_follows_an_operator_drain_live() {
    let began = Instant::now();
    let backends = http_backends(4).await;
    let at = |i: usize| backends[i].local_addr();
    let gone = dead_address();
    let server = balancer(&format!(
        r#"{WEB}
  [[listener.route]]
  name = "legacy"
  match = {{ path_prefix = "/legacy/" }}
  cluster = "legacy"
  [[listener.route]]
  name = "api"
  cluster = "api"
[[cluster]]
name = "api"
slow_start = "30s"
endpoints = {api}
[[cluster]]
name = "legacy"
balance = "round-robin"
endpoints = {legacy}
"#,
        api = weighted_endpoints(&[
            (at(0), "api-1", 10),
            (at(1), "api-2", 10),
            (at(2), "api-3", 10)
        ]),
        legacy = weighted_endpoints(&[(at(3), "legacy-1", 1), (gone, "legacy-gone", 1)]),
    ))
    .await;
    let web = address(&server, "web");
    let admin = server.admin_address().unwrap();
    let _traffic = Traffic::start(web, &["/v1/items", "/legacy/report"]);

    let mut browser = Chromium::launch();
    let mut page = browser.devtools().await;
    page.open(&format!("http://{admin}/"), &[]).await;

    for endpoint in ["api-1", "api-2", "api-3"] {
        page.wait_for(
            &format!("{endpoint} healthy"),
            &endpoint_in_state("api", endpoint, "healthy"),
        )
        .await;
    }
    page.wait_for(
        "legacy-1 healthy",
        &endpoint_in_state("legacy", "legacy-1", "healthy"),
    )
    .await;
    // Round-robin sends every other request to the address nothing listens on: five
    // connect failures in a row eject it, and the page names the reason from
    // ejections_total.
    let ejected = page
        .wait_for(
            "legacy-gone ejected for gateway failures",
            &format!(
                "(() => {{ const row = {}; return row && row.text.includes('gateway_failures') ? row : null; }})()",
                endpoint_in_state("legacy", "legacy-gone", "ejected")
            ),
        )
        .await;
    assert!(
        ejected["text"]
            .as_str()
            .unwrap()
            .contains("last: gateway_failures"),
        "{ejected}"
    );
    // Rates and percentiles need two scrapes with traffic between them.
    let figures = page
        .wait_for(
            "a request rate and a p50 for cluster api",
            "(() => { const c = document.querySelector('#clusters .cluster[data-cluster=\"api\"]'); \
               if (!c) return null; \
               const rate = c.querySelector('[data-figure=requests] b').textContent; \
               const p50 = c.querySelector('[data-figure=p50] b').textContent; \
               return /^[0-9.]+\\/s$/.test(rate) && rate !== '0/s' && /(µs|ms|s)$/.test(p50) ? { rate, p50 } : null; })()",
        )
        .await;
    eprintln!("cluster api shows {figures}");

    let listeners = page
        .evaluate("document.querySelector('#listeners tr[data-listener=\"web\"]').innerText")
        .await;
    assert!(
        listeners.as_str().unwrap().contains(&web.to_string()),
        "listener row: {listeners}"
    );
    let routes = page
        .evaluate(
            "Array.from(document.querySelectorAll('#routes tr[data-route]')).map(r => r.innerText)",
        )
        .await;
    let routes: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(
        routes[0].contains("legacy") && routes[0].contains("/legacy/"),
        "{routes:?}"
    );
    assert!(
        routes[1].contains("every request") && routes[1].contains("api"),
        "{routes:?}"
    );
    let reloads = page
        .evaluate("document.querySelector('#reloads').getAttribute('data-loaded') === 'true' && document.querySelector('#reloads').innerText")
        .await;
    assert!(
        reloads
            .as_str()
            .is_some_and(|t| t.contains("no reload history") || t.contains("trigger")),
        "reloads panel: {reloads}"
    );

    // Drain api-2 through the API; the page that is already open must follow.
    page.evaluate("window.openedBeforeTheDrain = true").await;
    let before = page.refreshes().await;
    let response = within(
        client()
            .post(format!(
                "http://{admin}/api/v1/clusters/api/endpoints/api-2/drain"
            ))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let drained = page
        .wait_for(
            "api-2 draining",
            &endpoint_in_state("api", "api-2", "draining"),
        )
        .await;
    let after = page.refreshes().await;
    assert!(
        after > before && after <= before + 4,
        "shown after {} polls",
        after - before
    );
    assert!(drained["text"].as_str().unwrap().contains("operator drain"));
    assert_eq!(
        page.evaluate("window.openedBeforeTheDrain === true").await,
        json!(true),
        "the same page, not a reload"
    );
    for endpoint in ["api-1", "api-3"] {
        page.wait_for(
            &format!("{endpoint} still healthy"),
            &endpoint_in_state("api", endpoint, "healthy"),
        )
        .await;
    }

    // The screenshot: the right size, and the cluster panel painted with text and the
    // state colours (healthy, draining, ejected badges), not blank.
    let png_bytes = page.screenshot().await;
    let path = screenshot_dir().join("dashboard.png");
    std::fs::write(&path, &png_bytes).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    let picture = Picture::decode(&png_bytes);
    assert_eq!((picture.width, picture.height), VIEWPORT);
    let rect = page
        .evaluate(
            "(() => { const r = document.querySelector('#clusters').getBoundingClientRect(); \
                   return { left: r.left, top: r.top, right: r.right, bottom: r.bottom }; })()",
        )
        .await;
    let region = picture.region(&rect);
    assert!(
        region.len() > 100_000,
        "cluster panel of {} pixels: {rect}",
        region.len()
    );
    let painted = region.iter().filter(|p| **p != [255, 255, 255]).count();
    let mut distinct = region.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        painted * 100 > region.len() * 3,
        "only {painted} of {} pixels of the cluster panel are not white",
        region.len()
    );
    assert!(
        distinct.len() >= 32,
        "only {} colours in the cluster panel",
        distinct.len()
    );
    for (state, colour) in [
        ("healthy", [0xda, 0xfb, 0xe1]),
        ("draining", [0xff, 0xf8, 0xc5]),
        ("ejected", [0xff, 0xe7, 0xd1]),
    ] {
        let found = pixels_of(&region, colour);
        assert!(found >= 50, "{found} pixels of the {state} badge colour");
    }

    // Undrain: the endpoint comes back slow-starting, its effective weight below 10.
    let response = within(
        client()
            .post(format!(
                "http://{admin}/api/v1/clusters/api/endpoints/api-2/undrain"
            ))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let ramping = page
        .wait_for(
            "api-2 slow-starting",
            &endpoint_in_state("api", "api-2", "slow-starting"),
        )
        .await;
    let effective = page
        .evaluate("Number(document.querySelector('#clusters tr[data-endpoint=\"api-2\"] [data-role=effective-weight]').firstChild.textContent)")
        .await;
    assert!(effective.as_f64().unwrap() < 10.0, "{ramping}");
    page.assert_no_problems();
    eprintln!("dashboard test took {:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_names_as_text_and_computes_its_figures_exactly() {
    let backends = http_backends(1).await;
    let hostile = r#"<img src=x onerror="window.injected=1">"#;
    let server = balancer(&format!(
        r#"{WEB}
  [[listener.route]]
  name = '<script>window.injected=2</script>'
  cluster = "c"
[[cluster]]
name = "c"
endpoints = [{{ address = "{}", name = '{hostile}' }}]
"#,
        backends[0].local_addr()
    ))
    .await;
    let admin = server.admin_address().unwrap();
    let mut browser = Chromium::launch();
    let mut page = browser.devtools().await;
    page.open(&format!("http://{admin}/"), &[]).await;
    page.wait_for(
        "the first poll",
        "Number(document.body.getAttribute('data-refresh-count')) >= 2",
    )
    .await;

    let shown = page
        .evaluate(
            "({ endpoint: document.querySelector('#clusters tr[data-endpoint] td').textContent, \
                route: document.querySelector('#routes tr[data-route] td:nth-child(2)').textContent, \
                injected: typeof window.injected, \
                elements: document.querySelectorAll('main img, main script').length })",
        )
        .await;
    assert_eq!(
        shown,
        json!({
            "endpoint": hostile,
            "route": "<script>window.injected=2</script>",
            "injected": "undefined",
            "elements": 0,
        })
    );

    // The page's own arithmetic, with figures worked out by hand.
    let figures = page
        .evaluate(
            r#"(() => {
  const d = window.switchyardDashboard;
  const text = [
    '# HELP x_total a counter',
    '# TYPE x_total counter',
    'x_total{a="q\\"b\\\\c\\nd",b="2"} 3',
    'y 1.5e3',
    'h_bucket{le="0.1"} 5',
    'h_bucket{le="0.2"} 10',
    'h_bucket{le="+Inf"} 10',
  ].join('\n');
  const parsed = d.parsePrometheus(text);
  const before = d.parsePrometheus('c_total{k="reset"} 10\nc_total{k="steady"} 4\n');
  const now = d.parsePrometheus('c_total{k="reset"} 4\nc_total{k="steady"} 10\nc_total{k="new"} 2\n');
  const win = d.makeWindow(now, before, 2);
  const first = d.makeWindow(now, null, 0);
  return {
    label: parsed.get('x_total')[0].labels.a,
    value: parsed.get('x_total')[0].value,
    exponent: parsed.get('y')[0].value,
    comments: parsed.has('#'),
    p50: d.histogramQuantile(0.5, [{ le: 0.1, count: 5 }, { le: 0.2, count: 10 }, { le: Infinity, count: 10 }]),
    p75: d.histogramQuantile(0.75, [{ le: Infinity, count: 10 }, { le: 0.2, count: 10 }, { le: 0.1, count: 5 }]),
    p99_overflow: d.histogramQuantile(0.99, [{ le: 0.1, count: 1 }, { le: Infinity, count: 4 }]),
    empty: d.histogramQuantile(0.5, [{ le: 0.1, count: 0 }, { le: Infinity, count: 0 }]),
    rate: win.rate('c_total', {}),
    steady_rate: win.rate('c_total', { k: 'steady' }),
    first_rate: first.rate('c_total', {}),
    total: win.total('c_total', {}),
    match: d.describeMatch({ hosts: ['api.example'], path: { prefix: '/v2/' }, methods: ['GET'],
      headers: [['x-canary', { exact: '1' }]], cookies: [], query: [], jwt_claims: [] }),
    split: d.describeAction({ forward: { split: [{ cluster: 'a', weight: 90 }, { cluster: 'b', weight: 10 }] } }),
    seconds: [d.formatSeconds(0.0004), d.formatSeconds(0.0123), d.formatSeconds(2.5), d.formatSeconds(null)],
  };
})()"#,
        )
        .await;
    let close = |key: &str, expected: f64| {
        let got = figures[key].as_f64().unwrap_or(f64::NAN);
        assert!((got - expected).abs() < 1e-9, "{key}: {got} != {expected}");
    };
    assert_eq!(figures["label"], "q\"b\\c\nd");
    close("value", 3.0);
    close("exponent", 1500.0);
    assert_eq!(figures["comments"], false);
    close("p50", 0.1);
    close("p75", 0.15);
    close("p99_overflow", 0.1);
    assert_eq!(figures["empty"], Value::Null);
    // reset 10 -> 4 counts 4, steady 4 -> 10 counts 6, new counts 2: 12 over 2 s.
    close("rate", 6.0);
    close("steady_rate", 3.0);
    assert_eq!(figures["first_rate"], Value::Null);
    close("total", 16.0);
    assert_eq!(
        figures["match"],
        "host api.example, path /v2/\u{2026}, GET, header x-canary=1"
    );
    assert_eq!(figures["split"], "split a 90 / b 10");
    assert_eq!(
        figures["seconds"],
        json!(["400 \u{b5}s", "12.3 ms", "2.50 s", "\u{2014}"])
    );
    page.assert_no_problems();
}

/// `GET /api/v1/reloads` in the shape agreed for it (newest first), served to the page by
/// the browser itself while the balancer does not have the view yet.
const RELOAD_HISTORY: &str = r#"{"reloads":[
  {"time":"2026-11-02T10:00:05Z","trigger":"api","result":"failure","summary":"2 errors, old configuration kept",
   "errors":["test.toml:3:1: cluster.name: <b>must not be empty</b>","test.toml:9:5: listener.route.cluster: unknown cluster \"x\""]},
  {"time":"2026-11-02T09:58:00Z","trigger":"sighup","result":"success","summary":"1 cluster changed","errors":[]}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_recent_reloads_and_says_which_view_failed() {
    let backends = http_backends(1).await;
    let server = balancer(&format!(
        "{WEB}\ncluster = \"c\"\n[[cluster]]\nname = \"c\"\nendpoints = [\"{}\"]\n",
        backends[0].local_addr()
    ))
    .await;
    let admin = server.admin_address().unwrap();
    let mut browser = Chromium::launch();
    let mut page = browser.devtools().await;
    page.open(
        &format!("http://{admin}/"),
        &[
            StandIn {
                path: "/api/v1/reloads",
                status: 200,
                body: RELOAD_HISTORY,
            },
            StandIn {
                path: "/metrics",
                status: 503,
                body: r#"{"error":"stand-in failure"}"#,
            },
        ],
    )
    .await;
    let reloads = page
        .wait_for(
            "two reloads",
            "(() => { const rows = Array.from(document.querySelectorAll('#reloads tr[data-result]')); \
               return rows.length === 2 ? rows.map(r => ({ result: r.dataset.result, cells: \
                 Array.from(r.children).map(c => c.firstChild.textContent), \
                 errors: Array.from(r.querySelectorAll('li')).map(li => li.textContent), \
                 markup: r.querySelectorAll('li *').length })) : null; })()",
        )
        .await;
    assert_eq!(
        reloads,
        json!([
            {
                "result": "failure",
                "cells": ["2026-11-02T10:00:05Z", "api", "failure", "2 errors, old configuration kept"],
                "errors": [
                    "test.toml:3:1: cluster.name: <b>must not be empty</b>",
                    "test.toml:9:5: listener.route.cluster: unknown cluster \"x\"",
                ],
                "markup": 0,
            },
            {
                "result": "success",
                "cells": ["2026-11-02T09:58:00Z", "sighup", "success", "1 cluster changed"],
                "errors": [],
                "markup": 0,
            },
        ])
    );
    // /metrics fails (503 from the stand-in): the status line names it, and the views that
    // did answer are still shown.
    let status = page
        .wait_for(
            "the failing view named",
            "(() => { const s = document.getElementById('status'); \
               return s.dataset.state === 'stale' ? s.textContent : null; })()",
        )
        .await;
    assert!(
        status.as_str().unwrap().contains("/metrics answered 503"),
        "{status}"
    );
    assert_eq!(
        page.evaluate("document.querySelectorAll('#clusters tr[data-endpoint]').length")
            .await,
        json!(1)
    );
    page.assert_no_problems();
}
