// The mesh-health page (docs/ui.md). Plain JavaScript, no build step, nothing loaded from elsewhere.
//
// It reads GET /v1/ui/events, a server-sent event stream of one JSON snapshot a second, with fetch() rather than
// EventSource: EventSource cannot send an Authorization header, and a token in the URL would land in logs.
// Everything shown comes from peers and clients, so it is written with textContent (never innerHTML), and the
// bytes read are bounded.
"use strict";

(() => {
  const EVENTS = "/v1/ui/events";
  const TOKEN_KEY = "spl.ui.token"; // sessionStorage: this tab only, gone when it closes
  const MAX_BUFFER = 8 * 1024 * 1024; // characters of one unfinished frame before the stream is dropped
  const HISTORY = 120; // lag samples kept per pair (two minutes at one snapshot a second)
  const RATE_WINDOW = 60; // seconds over which a pair's pull rate is measured
  const RETRY_MIN = 1000;
  const RETRY_MAX = 15000;
  const STATES = new Set([
    "starting", "running", "paused", "failing", "stopped", "active", "establishing", "revoked",
    "degraded", "peer_manifest_changed", "endpoint_moving",
  ]);
  const TREE_WAITING = new Set(["paused", "starting", "restarting"]); // runtime/child.py
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const history = new Map(); // "kind:pair_id" -> [{t, lag, pulled}]
  let controller = null; // the open stream's AbortController
  let retryDelay = RETRY_MIN;
  let retryTimer = null;
  let authRequired = true;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function setConnection(state, text) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = text;
  }

  // -- the token --------------------------------------------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null; // storage disabled: ask every time
    }
  }

  function askForToken(message) {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* nothing stored */ }
    $("dashboard").hidden = true;
    $("forget-token").hidden = true;
    $("token-form").hidden = false;
    $("token-error").textContent = message || "";
    setConnection("waiting", "waiting for a token");
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) { /* kept for this connection only */ }
    $("token").value = "";
    $("token-form").hidden = true;
    connect(token);
  });

  $("forget-token").addEventListener("click", () => {
    stop();
    askForToken("");
  });

  // -- the stream -------------------------------------------------------------------------------------------------

  function stop() {
    if (retryTimer !== null) clearTimeout(retryTimer);
    retryTimer = null;
    if (controller !== null) controller.abort();
    controller = null;
  }

  function retryLater(token, why) {
    const seconds = Math.round(retryDelay / 1000);
    setConnection("retrying", `${why}; retrying in ${seconds} s`);
    retryTimer = setTimeout(() => connect(token), retryDelay);
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX);
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && typeof body.message === "string") return body.message.slice(0, 500);
    } catch (_) { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  async function connect(token) {
    stop();
    const mine = new AbortController();
    controller = mine;
    setConnection("connecting", "connecting…");
    const headers = { accept: "text/event-stream" };
    if (token) headers.authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(EVENTS, { headers, cache: "no-store", credentials: "omit", signal: mine.signal });
    } catch (error) {
      if (mine.signal.aborted) return;
      retryLater(token, "the daemon cannot be reached");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      const message = await errorMessage(response);
      if (authRequired) {
        askForToken(message);
      } else {
        setConnection("error", message);
      }
      return;
    }
    if (!response.ok || !response.body) {
      retryLater(token, await errorMessage(response));
      return;
    }
    $("token-form").hidden = true;
    $("dashboard").hidden = false;
    $("forget-token").hidden = !authRequired;
    setConnection("live", "live");
    retryDelay = RETRY_MIN;
    try {
      await read(response.body, mine);
    } catch (error) {
      if (mine.signal.aborted) return;
      retryLater(token, `the stream broke (${String(error && error.message ? error.message : error).slice(0, 200)})`);
      return;
    }
    if (!mine.signal.aborted) retryLater(token, "the stream ended");
  }

  // Server-sent events from a byte stream: frames end with a blank line; lines end with \n, \r\n or \r.
  async function read(body, mine) {
    const reader = body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      buffer = buffer.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        frameReceived(frame, mine);
      }
      if (buffer.length > MAX_BUFFER) {
        mine.abort();
        throw new Error("a frame larger than the page accepts");
      }
    }
  }

  function frameReceived(frame, mine) {
    let name = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (_) {
      return; // not ours to guess at
    }
    if (name === "mesh") {
      render(payload);
    } else if (name === "server_shutdown") {
      setConnection("retrying", "the daemon is stopping");
      mine.abort();
      const wait = Math.min(Math.max(Number(payload.retry_after_ms) || RETRY_MIN, RETRY_MIN), RETRY_MAX);
      retryTimer = setTimeout(() => connect(storedToken()), wait);
    }
  }

  // -- rendering --------------------------------------------------------------------------------------------------

  function text(value, fallback = "–") {
    return value === undefined || value === null || value === "" ? fallback : String(value);
  }

  function duration(seconds) {
    const s = Math.max(0, Number(seconds) || 0);
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function render(snapshot) {
    if (!snapshot || typeof snapshot !== "object") return;
    $("instance").textContent = text(snapshot.instance_did, "");
    $("head-sequence").textContent = text(snapshot.sequence);
    $("daemon-status").textContent = text(snapshot.status);
    $("daemon-status").dataset.state = snapshot.status === "ok" ? "ok" : "bad";
    $("fleet-level").textContent = text(snapshot.fleet);
    $("uptime").textContent = duration(snapshot.uptime_secs);
    const problems = Array.isArray(snapshot.problems) ? snapshot.problems : [];
    $("problems").replaceChildren(...problems.map((problem) => el("li", problem)));
    const pairs = Array.isArray(snapshot.pairs) ? snapshot.pairs : [];
    renderPairs(pairs, Number(snapshot.at) || Date.now() / 1000, snapshot.pairs_total || {});
    $("detail-note").hidden = snapshot.detail !== false || pairs.length === 0; // metrics:read alone: figures only
    $("tree").replaceChildren(...(snapshot.supervision ? [treeNode(snapshot.supervision)] : []));
  }

  function renderPairs(pairs, at, totals) {
    const body = $("pairs-body");
    const rows = new Map();
    for (const row of body.children) rows.set(row.dataset.key, row);
    const seen = new Set();
    let previous = null;
    for (const pair of pairs) {
      if (!pair || typeof pair !== "object") continue;
      const key = `${pair.kind}:${pair.pair_id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const samples = history.get(key) || [];
      samples.push({ t: at, lag: Number(pair.lag_records) || 0, pulled: Number(pair.records_pulled) || 0 });
      if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
      history.set(key, samples);
      let row = rows.get(key);
      if (!row) row = newRow(pair, key);
      fillRow(row, pair, samples);
      // Keep the server's order (sync pairs, then federation pairs, each by id) without rebuilding rows.
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (row !== wanted) body.insertBefore(row, wanted);
      previous = row;
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        history.delete(key);
      }
    }
    $("pairs-empty").hidden = seen.size > 0;
    const total = (Number(totals.sync) || 0) + (Number(totals.federation) || 0);
    $("pair-count").textContent = String(total);
    const truncated = $("pairs-truncated");
    truncated.hidden = total <= seen.size;
    truncated.textContent = `${seen.size} of ${total} pairs shown (the rest: GET /v1/sync/pairs, /v1/federation/pairs)`;
  }

  function newRow(pair, key) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    row.dataset.kind = String(pair.kind);
    row.dataset.pairId = String(pair.pair_id);
    const cells = ["kind", "pair", "peer", "state", "lag", "spark", "rate", "error"];
    for (const name of cells) row.appendChild(el("td", null, `cell-${name}`));
    row.querySelector(".cell-kind").textContent = text(pair.kind);
    row.querySelector(".cell-pair").appendChild(el("code", pair.pair_id));
    const lag = row.querySelector(".cell-lag");
    lag.append(el("span", "", "lag-records"), el("span", " rec", "unit"), el("span", "", "lag-seconds"));
    row.querySelector(".cell-state").append(el("span", "", "state"), el("span", "", "state-reason"));
    row.querySelector(".cell-error").append(el("span", "", "error-code"), el("span", "", "error-message"));
    return row;
  }

  function fillRow(row, pair, samples) {
    const peer = row.querySelector(".cell-peer");
    peer.textContent = text(pair.peer_url);
    peer.title = `${text(pair.peer_did, "")}  ·  ${text(pair.scope, "")}  ·  ${text(pair.mode, "")}`;
    const state = row.querySelector(".state");
    state.textContent = text(pair.state);
    state.dataset.state = STATES.has(pair.state) ? pair.state : "other";
    row.querySelector(".state-reason").textContent = pair.state_reason ? ` ${pair.state_reason}` : "";
    row.querySelector(".lag-records").textContent = String(Number(pair.lag_records) || 0);
    const behind = Number(pair.lag_seconds) || 0;
    row.querySelector(".lag-seconds").textContent = behind > 0 ? ` · ${duration(behind)} behind` : "";
    row.querySelector(".cell-spark").replaceChildren(sparkline(samples));
    row.querySelector(".cell-rate").textContent = rate(samples);
    const error = pair.last_error && typeof pair.last_error === "object" ? pair.last_error : null;
    row.querySelector(".error-code").textContent = error ? text(error.code, "") : "";
    row.querySelector(".error-message").textContent = error ? ` ${text(error.message, "")}` : "";
    row.dataset.failing = error && pair.state === "failing" ? "yes" : "no";
  }

  // Records pulled per second over the last RATE_WINDOW seconds of samples (– until two samples are in).
  function rate(samples) {
    if (samples.length < 2) return "–";
    const last = samples[samples.length - 1];
    let first = samples[0];
    for (const sample of samples) {
      if (last.t - sample.t <= RATE_WINDOW) {
        first = sample;
        break;
      }
    }
    const seconds = last.t - first.t;
    if (seconds <= 0) return "–";
    const perSecond = Math.max(0, last.pulled - first.pulled) / seconds;
    return `${perSecond < 10 ? perSecond.toFixed(2) : Math.round(perSecond)} rec/s`;
  }

  // The lag history as an inline SVG polyline, scaled to its own maximum.
  function sparkline(samples) {
    const width = 120;
    const height = 24;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "spark");
    const lags = samples.map((sample) => sample.lag);
    const max = Math.max(1, ...lags);
    const step = width / Math.max(HISTORY - 1, 1);
    const offset = width - step * (lags.length - 1);
    const points = lags.map((lag, i) => `${(offset + i * step).toFixed(1)},${(height - 2 - (lag / max) * (height - 4)).toFixed(1)}`);
    const axis = document.createElementNS(SVG, "line"); // zero lag, across the whole window
    axis.setAttribute("x1", "0");
    axis.setAttribute("x2", String(width));
    axis.setAttribute("y1", String(height - 2));
    axis.setAttribute("y2", String(height - 2));
    axis.setAttribute("class", "spark-axis");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("class", max > 1 || lags.some((lag) => lag > 0) ? "spark-line behind" : "spark-line");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `lag over the last ${lags.length} s: now ${lags[lags.length - 1] || 0}, peak ${Math.max(0, ...lags)} records`;
    const [x, y] = (points[points.length - 1] || `${width},${height - 2}`).split(",");
    const dot = document.createElementNS(SVG, "circle"); // now
    dot.setAttribute("cx", x);
    dot.setAttribute("cy", y);
    dot.setAttribute("r", "2");
    dot.setAttribute("class", lags[lags.length - 1] > 0 ? "spark-dot behind" : "spark-dot");
    svg.append(title, axis, line, dot);
    return svg;
  }

  function treeNode(node) {
    const item = el("li");
    item.append(el("span", text(node.id), "tree-id"));
    const state = el("span", text(node.state), "tree-state");
    state.dataset.state = node.state === "running" ? "ok" : TREE_WAITING.has(node.state) ? "wait" : "bad";
    item.append(" ", state);
    if (Number(node.restarts) > 0) item.append(el("span", ` restarted ${Number(node.restarts)}×`, "muted"));
    if (node.last_error) item.append(el("span", ` ${node.last_error}`, "error"));
    const children = Array.isArray(node.children) ? node.children : node.children && node.children.children;
    const subtree = node.children && !Array.isArray(node.children) ? node.children : node;
    if (Array.isArray(children) && children.length > 0) {
      const list = el("ul");
      for (const child of children) list.appendChild(treeNode(child));
      const total = Number(subtree.children_total) || children.length;
      if (total > children.length) list.appendChild(el("li", `… and ${total - children.length} more`, "muted"));
      item.appendChild(list);
    }
    return item;
  }

  // -- start ------------------------------------------------------------------------------------------------------

  async function start() {
    // /health is open and says whether this daemon wants tokens at all (--insecure-localhost: no).
    try {
      const health = await fetch("/health", { cache: "no-store", credentials: "omit" });
      const body = await health.json();
      authRequired = !(body && body.auth_required === false);
    } catch (_) {
      authRequired = true;
    }
    if (!authRequired) {
      connect(null);
      return;
    }
    const token = storedToken();
    if (token) connect(token);
    else askForToken("");
  }

  start();
})();
