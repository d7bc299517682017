//! The dashboard (`GET /` on the admin listener) in a real headless Chromium: the page is
//! loaded from a running balancer, read through the DevTools protocol (`Runtime.evaluate`
//! on the live DOM) and photographed (`Page.captureScreenshot`), so what is checked is what
//! a person would see, script and style sheet included.
//!
//! The browser harness is `browser.rs`; without Chromium these tests fail and say how to
//! install it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{Chromium, DevTools, Picture, StandIn, VIEWPORT, pixels_of, screenshot_dir};
use crate::support::*;

/// How many polls the page has rendered.
async fn refreshes(page: &mut DevTools) -> u64 {
    let count = page
        .evaluate("Number(document.body.getAttribute('data-refresh-count'))")
        .await;
    count.as_u64().unwrap_or(0)
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
    let before = refreshes(&mut page).await;
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
    let after = refreshes(&mut page).await;
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
    let path = screenshot_dir("dashboard").join("dashboard.png");
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
