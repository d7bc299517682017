// Switchyard dashboard: polls the admin API of the balancer that served it and renders
// what it returns.
//
// Why it is written this way:
// - No framework and no build step: the file is embedded in the binary (include_str!) and
//   is read and reviewed as it is served.
// - Every string from the API reaches the DOM as a text node or through setAttribute (see
//   `el`), never as markup: an endpoint called `<img onerror=...>` is shown, not run. The
//   page's Content-Security-Policy forbids inline scripts as a second line of defence.
// - Rates, error rates and percentiles are computed here from the differences between two
//   scrapes of /metrics, so the balancer keeps no state for the page and an open page costs
//   it one scrape and four small JSON views per poll.
// - The page only reads. Drain, weight and reload stay with the API and its callers, so the
//   page needs no credentials and a stray click cannot take an endpoint out.
"use strict";

(function () {
  /** Rates and percentiles are taken over this much polling history. */
  const WINDOW_MS = 10000;
  /** How often the page polls, unless `?refresh=SECONDS` says otherwise. */
  const DEFAULT_REFRESH_MS = 1000;

  // ------------------------------------------------------------------------------------
  // Pure functions: parsing and arithmetic, no DOM. Exported on window.switchyardDashboard
  // so the browser test can check them with exact figures.
  // ------------------------------------------------------------------------------------

  /** A number as Prometheus writes it (`+Inf`, `-Inf`, `NaN`, decimals, exponents). */
  function parseNumber(text) {
    if (text === undefined || text === "") return NaN;
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text);
  }

  /**
   * One sample line, `name{label="value",...} value [timestamp]`, as
   * `{name, labels, value}`; null for a line that is not one.
   */
  function parseSampleLine(line) {
    let i = 0;
    while (i < line.length && line[i] !== "{" && line[i] !== " " && line[i] !== "\t") i++;
    const name = line.slice(0, i);
    const labels = Object.create(null);
    if (line[i] === "{") {
      i++;
      for (;;) {
        while (line[i] === " " || line[i] === ",") i++;
        if (i >= line.length) return null;
        if (line[i] === "}") {
          i++;
          break;
        }
        const equals = line.indexOf("=", i);
        if (equals < 0 || line[equals + 1] !== '"') return null;
        const key = line.slice(i, equals).trim();
        i = equals + 2;
        let value = "";
        for (;;) {
          if (i >= line.length) return null;
          const c = line[i];
          if (c === "\\") {
            const escaped = line[i + 1];
            if (escaped === undefined) return null;
            value += escaped === "n" ? "\n" : escaped;
            i += 2;
          } else if (c === '"') {
            i++;
            break;
          } else {
            value += c;
            i++;
          }
        }
        labels[key] = value;
      }
    }
    const value = parseNumber(line.slice(i).trim().split(/\s+/)[0]);
    if (name === "" || Number.isNaN(value)) return null;
    return { name, labels, value };
  }

  /**
   * Prometheus text exposition (0.0.4) as a Map from sample name (`_bucket`, `_sum` and
   * `_count` included) to `[{labels, value}]`. Comments and malformed lines are skipped.
   */
  function parsePrometheus(text) {
    const samples = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) continue;
      const sample = parseSampleLine(line);
      if (sample === null) continue;
      let list = samples.get(sample.name);
      if (list === undefined) {
        list = [];
        samples.set(sample.name, list);
      }
      list.push({ labels: sample.labels, value: sample.value });
    }
    return samples;
  }

  /** A stable identity for a label set. */
  function seriesKey(labels) {
    return Object.keys(labels)
      .sort()
      .map((k) => k + "\u0000" + labels[k])
      .join("\u0001");
  }

  /**
   * Whether `labels` satisfy `want`: each key of `want` is either a value the label must
   * equal or a predicate over the label's value.
   */
  function labelsMatch(labels, want) {
    for (const key of Object.keys(want || {})) {
      const expected = want[key];
      const actual = labels[key];
      if (typeof expected === "function" ? !expected(actual) : actual !== expected) return false;
    }
    return true;
  }

  /** Sum of the series of `name` matching `want` in one parsed scrape. */
  function sumOf(scrape, name, want) {
    let total = 0;
    for (const s of scrape.get(name) || []) {
      if (labelsMatch(s.labels, want)) total += s.value;
    }
    return total;
  }

  /**
   * How much each series of counter `name` matching `want` grew from `before` to `now`.
   * A series missing from `before` was created since, at zero; one that fell was reset (a
   * restart) and counts from zero.
   */
  function increases(now, before, name, want, earlierByName) {
    let earlier = earlierByName && earlierByName.get(name);
    if (earlier === undefined) {
      earlier = new Map();
      for (const s of before.get(name) || []) earlier.set(seriesKey(s.labels), s.value);
      if (earlierByName) earlierByName.set(name, earlier);
    }
    const grown = [];
    for (const s of now.get(name) || []) {
      if (!labelsMatch(s.labels, want)) continue;
      const previous = earlier.get(seriesKey(s.labels)) ?? 0;
      grown.push({ labels: s.labels, delta: s.value >= previous ? s.value - previous : s.value });
    }
    return grown;
  }

  /**
   * The q-quantile (0 < q < 1) of a cumulative histogram given as `[{le, count}]`, with
   * linear interpolation inside the bucket the rank falls in, as PromQL's
   * histogram_quantile does. A rank in the +Inf bucket answers the highest finite bound.
   * null without observations.
   */
  function histogramQuantile(q, buckets) {
    const sorted = buckets.slice().sort((a, b) => a.le - b.le);
    if (sorted.length === 0) return null;
    const observations = sorted[sorted.length - 1].count;
    if (!(observations > 0)) return null;
    const rank = q * observations;
    let lowerBound = 0;
    let lowerCount = 0;
    for (let i = 0; i < sorted.length; i++) {
      const bucket = sorted[i];
      if (bucket.count >= rank) {
        if (bucket.le === Infinity) return i > 0 ? sorted[i - 1].le : null;
        const inBucket = bucket.count - lowerCount;
        if (inBucket <= 0) return bucket.le;
        return lowerBound + ((bucket.le - lowerBound) * (rank - lowerCount)) / inBucket;
      }
      lowerBound = bucket.le;
      lowerCount = bucket.count;
    }
    return null;
  }

  /**
   * The figures of one polling window: the newest scrape, the one `seconds` earlier
   * (null on the first poll) and the arithmetic the panels need.
   */
  function makeWindow(now, before, seconds) {
    const ready = before !== null && seconds > 0;
    // Each panel asks about the same few families many times per poll: index the earlier
    // scrape once per family.
    const earlierByName = new Map();
    return {
      seconds,
      /** Current total of the series of `name` matching `want`. */
      total(name, want) {
        return sumOf(now, name, want);
      },
      /** The current series of `name` matching `want`, as `[{labels, value}]`. */
      series(name, want) {
        return (now.get(name) || []).filter((s) => labelsMatch(s.labels, want));
      },
      /** Increase per second over the window; null on the first poll. */
      rate(name, want) {
        if (!ready) return null;
        let grown = 0;
        for (const s of increases(now, before, name, want, earlierByName)) grown += s.delta;
        return grown / seconds;
      },
      /** Per-series increases over the window; empty on the first poll. */
      increases(name, want) {
        return ready ? increases(now, before, name, want, earlierByName) : [];
      },
      /** The q-quantile of histogram `name` (series matching `want` merged) over the window. */
      quantile(q, name, want) {
        if (!ready) return null;
        const byBound = new Map();
        for (const s of increases(now, before, name + "_bucket", want, earlierByName)) {
          const bound = parseNumber(s.labels.le);
          byBound.set(bound, (byBound.get(bound) || 0) + s.delta);
        }
        return histogramQuantile(
          q,
          Array.from(byBound, ([le, count]) => ({ le, count })),
        );
      },
    };
  }

  /** A status code label of the 5xx class. */
  function isServerError(code) {
    return typeof code === "string" && code.length === 3 && code[0] === "5";
  }

  function formatRate(perSecond) {
    if (perSecond === null || perSecond === undefined) return "\u2014";
    if (perSecond === 0) return "0/s";
    if (perSecond < 0.1) return perSecond.toFixed(2) + "/s";
    if (perSecond < 10) return perSecond.toFixed(1) + "/s";
    return Math.round(perSecond).toLocaleString("en-US") + "/s";
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "\u2014";
    if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " \u00b5s";
    const digits = (value) => (value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0));
    if (seconds < 1) return digits(seconds * 1e3) + " ms";
    return digits(seconds) + " s";
  }

  function formatMilliseconds(ms) {
    return ms === null || ms === undefined ? "\u2014" : formatSeconds(ms / 1e3);
  }

  function formatRatio(ratio) {
    if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "\u2014";
    return (ratio * 100).toFixed(1) + " %";
  }

  function formatCount(n) {
    return Math.round(n).toLocaleString("en-US");
  }

  function formatBytesRate(perSecond) {
    if (perSecond === null) return "\u2014";
    const units = ["B", "KiB", "MiB", "GiB"];
    let value = perSecond;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit++;
    }
    return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[unit] + "/s";
  }

  /** A share of errors as text, `—` without requests. */
  function share(part, whole) {
    return part === null || whole === null || whole === 0 ? "\u2014" : formatRatio(part / whole);
  }

  /** One line describing a route's match (SPEC 3 route matchers, as /api/v1/config gives them). */
  function describeMatch(matcher) {
    if (!matcher) return "every request";
    const value = (v) => (v && v.regex !== undefined ? "~/" + v.regex + "/" : v ? "=" + v.exact : "");
    const parts = [];
    if (matcher.hosts && matcher.hosts.length) parts.push("host " + matcher.hosts.join(" | "));
    if (matcher.path) {
      if (matcher.path.exact !== undefined) parts.push("path = " + matcher.path.exact);
      else if (matcher.path.prefix !== undefined) parts.push("path " + matcher.path.prefix + "\u2026");
      else if (matcher.path.regex !== undefined) parts.push("path ~/" + matcher.path.regex + "/");
    }
    if (matcher.methods && matcher.methods.length) parts.push(matcher.methods.join(" | "));
    const pairs = (label, list) => {
      for (const [name, v] of list || []) parts.push(label + " " + name + value(v));
    };
    pairs("header", matcher.headers);
    pairs("cookie", matcher.cookies);
    pairs("query", matcher.query);
    pairs("claim", matcher.jwt_claims);
    return parts.length ? parts.join(", ") : "every request";
  }

  /** A forward target (`{cluster}` or `{split: [...]}`) as text. */
  function describeTarget(target) {
    if (!target) return "\u2014";
    if (target.cluster !== undefined) return "\u2192 " + target.cluster;
    if (target.split !== undefined) {
      return "split " + target.split.map((w) => w.cluster + " " + w.weight).join(" / ");
    }
    return "\u2014";
  }

  /** A route's action as text. */
  function describeAction(action) {
    if (!action) return "\u2014";
    if (action.forward !== undefined) return describeTarget(action.forward);
    if (action.redirect !== undefined) {
      const r = action.redirect;
      const to = [r.scheme && r.scheme + "://", r.host, r.path].filter(Boolean).join("");
      return "redirect " + r.code + (to ? " " + to : "");
    }
    if (action.direct_response !== undefined) return "respond " + action.direct_response.status;
    return "\u2014";
  }

  /** A route's timeout, retry, hedge and rate-limit policy as text. */
  function describePolicy(route) {
    const parts = ["timeout " + route.timeout];
    if (route.retry) {
      parts.push("attempts " + route.retry.attempts + " on " + (route.retry.on || []).join(", "));
    }
    if (route.hedge) parts.push("hedge");
    if (route.rate_limit) parts.push("rate limit");
    if (route.auth) parts.push("auth");
    return parts.join(" \u00b7 ");
  }

  // ------------------------------------------------------------------------------------
  // DOM: the only way this page creates elements. Children are text or nodes; properties
  // are limited to a few attributes that cannot run code.
  // ------------------------------------------------------------------------------------

  const SAFE_ATTRIBUTES = new Set(["class", "title", "colspan", "min", "max", "value", "aria-label"]);

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (!SAFE_ATTRIBUTES.has(name) && !name.startsWith("data-")) {
        throw new Error("dashboard: attribute " + name + " is not on the safe list");
      }
      node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function replacePanel(id, ...nodes) {
    const section = document.getElementById(id);
    section.querySelector(".panel-body").replaceChildren(...nodes.flat());
    section.setAttribute("data-loaded", "true");
  }

  function table(headers, rows, attributes) {
    return el(
      "table",
      attributes,
      el("thead", null, el("tr", null, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
      el("tbody", null, rows),
    );
  }

  function num(text, attributes) {
    return el("td", Object.assign({ class: "num" }, attributes || {}), text);
  }

  function figure(label, value, attributes) {
    return el("span", attributes, label + " ", el("b", null, value));
  }

  function stateBadge(state) {
    return el("span", { class: "state state-" + state, "data-role": "state" }, state);
  }

  function clockTime(unixSeconds) {
    return new Date(unixSeconds * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  // ------------------------------------------------------------------------------------
  // Panels
  // ------------------------------------------------------------------------------------

  const REQUESTS = "switchyard_requests_total";

  /** The last ejection reason seen per endpoint (cluster \0 endpoint), from the counters. */
  const lastEjectionReason = new Map();

  function noteEjectionReasons(current, previous) {
    // Before the page saw a counter grow, the best guess is the most frequent reason.
    const largest = new Map();
    for (const s of current.get("switchyard_ejections_total") || []) {
      const key = s.labels.cluster + "\u0000" + s.labels.endpoint;
      const best = largest.get(key);
      if (s.value > 0 && (best === undefined || s.value > best.value)) largest.set(key, s);
    }
    for (const [key, s] of largest) {
      if (!lastEjectionReason.has(key)) lastEjectionReason.set(key, s.labels.reason);
    }
    if (previous === null) return;
    const grown = increases(current, previous, "switchyard_ejections_total", {});
    for (const s of grown) {
      if (s.delta > 0) lastEjectionReason.set(s.labels.cluster + "\u0000" + s.labels.endpoint, s.labels.reason);
    }
  }

  function renderOverview(win, clusters) {
    const requests = win.rate(REQUESTS, {});
    const upstream5xx = win.rate(REQUESTS, { origin: "upstream", code: isServerError });
    const proxy5xx = win.rate(REQUESTS, { origin: "proxy", code: isServerError });
    const endpoints = clusters.flatMap((c) => c.endpoints);
    const usable = endpoints.filter((e) => e.state === "healthy" || e.state === "slow-starting").length;
    // Draining is an operator's intent; unhealthy and ejected endpoints are what to look at.
    const failing = endpoints.some((e) => e.state === "unhealthy" || e.state === "ejected");
    const budgetSpent = win.rate("switchyard_retry_budget_exhausted_total", {});
    const tile = (label, value, alert, role) =>
      el("div", { class: "tile", "data-alert": alert ? "true" : null, "data-figure": role },
        el("span", { class: "label" }, label), el("span", { class: "value" }, value));
    replacePanel(
      "overview",
      el("div", { class: "tiles" },
        tile("requests", formatRate(requests), false, "requests"),
        tile("upstream 5xx", formatRate(upstream5xx) + " \u00b7 " + share(upstream5xx, requests), upstream5xx > 0, "upstream-errors"),
        tile("proxy 5xx", formatRate(proxy5xx) + " \u00b7 " + share(proxy5xx, requests), proxy5xx > 0, "proxy-errors"),
        tile("latency p50 / p99", formatSeconds(win.quantile(0.5, "switchyard_request_duration_seconds", {})) + " / " +
          formatSeconds(win.quantile(0.99, "switchyard_request_duration_seconds", {})), false, "latency"),
        tile("retries", formatRate(win.rate("switchyard_retries_total", {})), false, "retries"),
        tile("retry budget exhausted", formatCount(win.total("switchyard_retry_budget_exhausted_total", {})), budgetSpent > 0, "budget"),
        tile("shed", formatRate(win.rate("switchyard_shed_total", {})), win.rate("switchyard_shed_total", {}) > 0, "shed"),
        tile("connections", formatCount(win.total("switchyard_connections_active", {})), false, "connections"),
        tile("usable endpoints", usable + " of " + endpoints.length, failing, "usable"),
      ),
    );
  }

  /** `reason<separator>count` for each `reason` label of `name` (matching `want`) above zero. */
  function nonZeroByReason(win, name, want, separator) {
    const counts = new Map();
    for (const s of win.series(name, want)) {
      counts.set(s.labels.reason, (counts.get(s.labels.reason) || 0) + s.value);
    }
    return Array.from(counts)
      .filter(([, count]) => count > 0)
      .map(([reason, count]) => reason + separator + formatCount(count));
  }

  function ejectionCell(win, cluster, endpoint) {
    const want = { cluster: cluster.name, endpoint: endpoint.name };
    const byReason = nonZeroByReason(win, "switchyard_ejections_total", want, " \u00d7");
    const last = lastEjectionReason.get(cluster.name + "\u0000" + endpoint.name);
    return el("td", { class: "num", "data-role": "ejections" },
      formatCount(endpoint.ejections || 0),
      byReason.length ? el("span", { class: "detail" }, byReason.join(", ")) : null,
      last && endpoint.ejections ? el("span", { class: "detail" }, "last: " + last) : null,
    );
  }

  function endpointRow(win, cluster, endpoint) {
    const want = { cluster: cluster.name, endpoint: endpoint.name };
    const latency = "switchyard_upstream_request_duration_seconds";
    const ramping = endpoint.effective_weight < endpoint.weight && endpoint.weight > 0;
    const until = endpoint.ejected_until;
    return el("tr", { "data-cluster": cluster.name, "data-endpoint": endpoint.name, "data-state": endpoint.state },
      el("td", null, endpoint.name),
      el("td", null, el("code", null, endpoint.address)),
      el("td", null, stateBadge(endpoint.state),
        endpoint.operator_drained ? el("span", { class: "detail" }, "operator drain") : null),
      num(formatCount(endpoint.weight)),
      el("td", { class: "num", "data-role": "effective-weight" }, String(endpoint.effective_weight),
        ramping ? el("meter", { class: "ramp", min: 0, max: endpoint.weight, value: endpoint.effective_weight, title: "slow start" }) : null),
      num(formatCount(endpoint.in_flight)),
      num(formatMilliseconds(endpoint.ewma_ms)),
      num(formatRatio(endpoint.success_rate)),
      num(formatRate(win.rate(latency + "_count", want)), { "data-role": "attempt-rate" }),
      num(formatSeconds(win.quantile(0.5, latency, want))),
      num(formatSeconds(win.quantile(0.99, latency, want))),
      ejectionCell(win, cluster, endpoint),
      el("td", null, until === null || until === undefined
        ? "\u2014"
        : [clockTime(until), el("span", { class: "detail" }, "in " + Math.max(0, Math.round(until - Date.now() / 1000)) + " s")]),
      el("td", null, endpoint.health === null || endpoint.health === undefined ? "passive only" : endpoint.health),
    );
  }

  function clusterBlock(win, cluster) {
    const want = { cluster: cluster.name };
    const requests = win.rate(REQUESTS, want);
    const upstream5xx = win.rate(REQUESTS, Object.assign({ origin: "upstream", code: isServerError }, want));
    const proxy5xx = win.rate(REQUESTS, Object.assign({ origin: "proxy", code: isServerError }, want));
    const latency = "switchyard_upstream_request_duration_seconds";
    const shedReasons = nonZeroByReason(win, "switchyard_shed_total", want, " ");
    const shedTotal = win.total("switchyard_shed_total", want);
    return el("div", { class: "cluster", "data-cluster": cluster.name },
      el("div", { class: "cluster-head" },
        el("h3", null, cluster.name),
        el("span", { class: "badge" }, cluster.balance),
        cluster.panic ? el("span", { class: "badge badge-panic", title: "too few usable endpoints: balancing over all that are not draining" }, "panic") : null,
      ),
      el("div", { class: "figures" },
        figure("requests", formatRate(requests), { "data-figure": "requests" }),
        figure("upstream 5xx", formatRate(upstream5xx) + " (" + share(upstream5xx, requests) + ")"),
        figure("proxy 5xx", formatRate(proxy5xx) + " (" + share(proxy5xx, requests) + ")"),
        figure("attempt p50", formatSeconds(win.quantile(0.5, latency, want)), { "data-figure": "p50" }),
        figure("p99", formatSeconds(win.quantile(0.99, latency, want)), { "data-figure": "p99" }),
        figure("retries", formatRate(win.rate("switchyard_retries_total", want)) + ", " +
          formatCount(win.total("switchyard_retries_total", want)) + " total"),
        figure("budget exhausted", formatCount(win.total("switchyard_retry_budget_exhausted_total", want))),
        figure("hedges", formatCount(win.total("switchyard_hedges_total", want))),
        figure("shed", formatCount(shedTotal) + (shedReasons.length ? " (" + shedReasons.join(", ") + ")" : "")),
        figure("pool", formatCount(win.total("switchyard_upstream_pool_connections", Object.assign({ state: "active" }, want))) + " active, " +
          formatCount(win.total("switchyard_upstream_pool_connections", Object.assign({ state: "idle" }, want))) + " idle"),
      ),
      table(
        ["endpoint", "address", "state", { label: "weight", num: true }, { label: "effective", num: true },
          { label: "in flight", num: true }, { label: "EWMA", num: true }, { label: "success", num: true },
          { label: "attempts", num: true }, { label: "p50", num: true }, { label: "p99", num: true },
          { label: "ejections", num: true }, "ejected until", "active health"],
        cluster.endpoints.map((e) => endpointRow(win, cluster, e)),
        { "data-role": "endpoints" },
      ),
    );
  }

  function renderClusters(win, clusters) {
    if (clusters.length === 0) {
      replacePanel("clusters", el("p", { class: "empty" }, "no clusters configured"));
      return;
    }
    replacePanel("clusters", clusters.map((c) => clusterBlock(win, c)));
  }

  function renderRoutes(win, config) {
    const rows = [];
    for (const listener of config.listeners || []) {
      for (const route of listener.routes || []) {
        const want = { listener: listener.name, route: route.name };
        const requests = win.rate(REQUESTS, want);
        const upstream5xx = win.rate(REQUESTS, Object.assign({ origin: "upstream", code: isServerError }, want));
        const proxy5xx = win.rate(REQUESTS, Object.assign({ origin: "proxy", code: isServerError }, want));
        const duration = "switchyard_request_duration_seconds";
        rows.push(el("tr", { "data-route": route.name, "data-listener": listener.name },
          el("td", null, listener.name),
          el("td", null, route.name),
          el("td", null, describeMatch(route.matcher)),
          el("td", null, describeAction(route.action)),
          el("td", null, el("span", { class: "detail" }, describePolicy(route))),
          num(formatRate(requests)),
          num(share(upstream5xx, requests)),
          num(share(proxy5xx, requests)),
          num(formatSeconds(win.quantile(0.5, duration, { route: route.name }))),
          num(formatSeconds(win.quantile(0.99, duration, { route: route.name }))),
        ));
      }
      for (const sni of listener.sni_routes || []) {
        rows.push(el("tr", { "data-listener": listener.name },
          el("td", null, listener.name), el("td", null, "sni " + sni.sni), el("td", null, "TLS server name " + sni.sni),
          el("td", null, "\u2192 " + sni.cluster), el("td", null, "passthrough"),
          num("\u2014"), num("\u2014"), num("\u2014"), num("\u2014"), num("\u2014")));
      }
      if (listener.target) {
        rows.push(el("tr", { "data-listener": listener.name },
          el("td", null, listener.name), el("td", null, "(" + listener.protocol + ")"), el("td", null, "every connection"),
          el("td", null, describeTarget(listener.target)), el("td", null, "L4"),
          num("\u2014"), num("\u2014"), num("\u2014"), num("\u2014"), num("\u2014")));
      }
    }
    if (rows.length === 0) {
      replacePanel("routes", el("p", { class: "empty" }, "no routes configured"));
      return;
    }
    replacePanel("routes", table(
      ["listener", "route", "match", "action", "policy", { label: "requests", num: true },
        { label: "upstream 5xx", num: true }, { label: "proxy 5xx", num: true },
        { label: "p50", num: true }, { label: "p99", num: true }],
      rows,
    ));
  }

  function renderListeners(win, listeners) {
    if (listeners.length === 0) {
      replacePanel("listeners", el("p", { class: "empty" }, "no listeners"));
      return;
    }
    const rows = listeners.map((l) => {
      const want = { listener: l.name };
      const rejected = nonZeroByReason(win, "switchyard_connections_rejected_total", want, " ");
      const rejectedTotal = win.total("switchyard_connections_rejected_total", want);
      return el("tr", { "data-listener": l.name },
        el("td", null, l.name),
        el("td", null, l.protocol),
        el("td", null, el("code", null, l.address)),
        num(formatCount(win.total("switchyard_connections_active", want))),
        num(formatRate(win.rate("switchyard_connections_total", want))),
        el("td", { class: "num" }, formatCount(rejectedTotal), rejected.length ? el("span", { class: "detail" }, rejected.join(", ")) : null),
        num(formatRate(win.rate(REQUESTS, want))),
        num(formatBytesRate(win.rate("switchyard_bytes_total", Object.assign({ direction: "rx" }, want)))),
        num(formatBytesRate(win.rate("switchyard_bytes_total", Object.assign({ direction: "tx" }, want)))),
      );
    });
    replacePanel("listeners", table(
      ["name", "protocol", "address", { label: "open", num: true }, { label: "accepted", num: true },
        { label: "rejected", num: true }, { label: "requests", num: true }, { label: "rx", num: true }, { label: "tx", num: true }],
      rows,
    ));
  }

  function renderReloads(win, reloads) {
    const counts = el("p", { class: "muted" },
      "config_reloads_total since start: " + formatCount(win.total("switchyard_config_reloads_total", { result: "success" })) +
      " succeeded, " + formatCount(win.total("switchyard_config_reloads_total", { result: "failure" })) + " failed");
    const list = reloads && Array.isArray(reloads.reloads) ? reloads.reloads : [];
    if (list.length === 0) {
      replacePanel("reloads", el("p", { class: "empty", "data-role": "no-reloads" }, "no reload history"), counts);
      return;
    }
    const rows = list.slice(0, 10).map((r) =>
      el("tr", { "data-result": r.result },
        el("td", null, r.time),
        el("td", null, r.trigger),
        el("td", null, el("span", { class: "badge result-" + (r.result === "success" ? "success" : "failure") }, r.result)),
        el("td", null, r.summary,
          Array.isArray(r.errors) && r.errors.length ? el("ul", { class: "errors" }, r.errors.map((e) => el("li", null, e))) : null),
      ));
    replacePanel("reloads", table(["time", "trigger", "result", "summary"], rows), counts);
  }

  // ------------------------------------------------------------------------------------
  // Polling
  // ------------------------------------------------------------------------------------

  async function fetchJson(path) {
    const response = await fetch(path, { cache: "no-store", headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  async function fetchText(path) {
    const response = await fetch(path, { cache: "no-store", headers: { accept: "text/plain" } });
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.text();
  }

  /** /api/v1/reloads, or null while the balancer does not serve it (404). */
  async function fetchReloads() {
    const response = await fetch("/api/v1/reloads", { cache: "no-store", headers: { accept: "application/json" } });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error("/api/v1/reloads answered " + response.status);
    return response.json();
  }

  /** Parsed scrapes, oldest first, as `{at, scrape}` with `at` from the monotonic clock. */
  const history = [];
  let lastSuccess = null;

  function refreshInterval() {
    const asked = Number.parseFloat(new URLSearchParams(window.location.search).get("refresh"));
    return Number.isFinite(asked) ? Math.min(60000, Math.max(250, asked * 1000)) : DEFAULT_REFRESH_MS;
  }

  function setStatus(state, text) {
    const status = document.getElementById("status");
    status.setAttribute("data-state", state);
    status.textContent = text;
    document.body.setAttribute("data-stale", state === "stale" ? "true" : "false");
  }

  async function poll(intervalMs) {
    const sources = ["clusters", "listeners", "config", "metrics", "reloads"];
    const settled = await Promise.allSettled([
      fetchJson("/api/v1/clusters"),
      fetchJson("/api/v1/listeners"),
      fetchJson("/api/v1/config"),
      fetchText("/metrics"),
      fetchReloads(),
    ]);
    const data = {};
    const failed = [];
    settled.forEach((result, i) => {
      if (result.status === "fulfilled") data[sources[i]] = result.value;
      else failed.push(result.reason && result.reason.message ? result.reason.message : sources[i]);
    });

    if (data.metrics !== undefined) {
      const at = performance.now();
      const scrape = parsePrometheus(data.metrics);
      const previous = history.length ? history[history.length - 1].scrape : null;
      noteEjectionReasons(scrape, previous);
      history.push({ at, scrape });
      while (history.length > 1 && at - history[0].at > WINDOW_MS + intervalMs) history.shift();
    }
    const newest = history.length ? history[history.length - 1] : null;
    const base = history.find((h) => h !== newest && newest.at - h.at <= WINDOW_MS + intervalMs / 2) || null;
    const win = makeWindow(
      newest ? newest.scrape : new Map(),
      base ? base.scrape : null,
      base ? (newest.at - base.at) / 1000 : 0,
    );
    document.getElementById("window-seconds").textContent = String(Math.round(win.seconds) || WINDOW_MS / 1000);

    const clusters = data.clusters && Array.isArray(data.clusters.clusters) ? data.clusters.clusters : null;
    if (clusters !== null) {
      renderOverview(win, clusters);
      renderClusters(win, clusters);
    }
    if (data.config !== undefined) renderRoutes(win, data.config);
    if (data.listeners !== undefined) renderListeners(win, data.listeners.listeners || []);
    if (data.reloads !== undefined) renderReloads(win, data.reloads);

    const now = new Date().toLocaleTimeString("en-GB", { hour12: false });
    if (failed.length === 0) {
      lastSuccess = now;
      setStatus("live", "live \u00b7 updated " + now + " \u00b7 every " + intervalMs / 1000 + " s");
    } else {
      setStatus("stale", "admin API: " + failed.join("; ") + (lastSuccess ? " \u00b7 last complete update " + lastSuccess : ""));
    }
    const count = Number(document.body.getAttribute("data-refresh-count")) + 1;
    document.body.setAttribute("data-refresh-count", String(count));
  }

  async function loop() {
    const intervalMs = refreshInterval();
    try {
      await poll(intervalMs);
    } catch (error) {
      setStatus("stale", "dashboard error: " + (error && error.message ? error.message : String(error)));
    }
    window.setTimeout(loop, intervalMs);
  }

  window.switchyardDashboard = Object.freeze({
    parsePrometheus,
    histogramQuantile,
    increases,
    makeWindow,
    describeMatch,
    describeAction,
    formatSeconds,
    formatRate,
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", loop);
  else loop();
})();
