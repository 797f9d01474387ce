// Field dashboard: live tiles from the WebSocket stream, status polled from the API.
// No library and nothing loaded from elsewhere: the gateway's network often has no internet.
"use strict";

const TOKEN_KEY = "edge-gateway.token";
const WINDOW_SECONDS = 5 * 60; // the charts show the last five minutes
const MIN_CHART_SECONDS = 30;
const MAX_POINTS = 600; // per chart; older points are thinned out
const HISTORY_READINGS = 2000; // replayed on first load to fill the charts
const STATUS_EVERY_MS = 3000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// A link like http://gw:8080/#token=… (as printed by `edge-gateway demo`) signs in
// directly. The fragment never reaches the server or its logs; it is removed from the
// address bar once the token is kept.
function tokenFromLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (!token) return null;
  localStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname + location.search);
  return token;
}
tokenFromLink();

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  lastSeq: null, // highest seq received; the next connection replays from it
  socket: null,
  streamUp: false,
  attempt: 0,
  reconnectTimer: null,
  statusTimer: null,
  gatewayReachable: true,
  status: null,
  gaps: 0,
  series: new Map(), // "device\u0000sensor" -> series
  dirty: new Set(),
  frameRequested: false,
};

// ---- token ---------------------------------------------------------------------

function askToken(message) {
  stop();
  $("login-error").textContent = message || "";
  $("login").hidden = false;
  $("forget").hidden = true;
  $("token-input").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  $("login").hidden = true;
  start();
});

$("forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  askToken("");
});

// ---- lifecycle -----------------------------------------------------------------

async function start() {
  $("forget").hidden = false;
  await Promise.all([pollStatus(), loadDevices()]);
  if (state.token === null) return; // refused: the sign-in form is showing
  if (state.lastSeq === null && state.status) {
    // Start a little in the past so the charts are not empty.
    state.lastSeq = Math.max(0, state.status.store.last_seq - HISTORY_READINGS);
  }
  connect();
  state.statusTimer = setInterval(pollStatus, STATUS_EVERY_MS);
}

function stop() {
  clearInterval(state.statusTimer);
  clearTimeout(state.reconnectTimer);
  state.statusTimer = state.reconnectTimer = null;
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
    state.socket = null;
  }
  state.streamUp = false;
}

function authHeaders() {
  return { Authorization: "Bearer " + state.token };
}

// ---- REST ----------------------------------------------------------------------

async function pollStatus() {
  let response;
  try {
    response = await fetch("/api/v1/status", { headers: authHeaders(), cache: "no-store" });
  } catch (err) {
    state.gatewayReachable = false;
    renderBanner();
    return;
  }
  if (response.status === 401) {
    localStorage.removeItem(TOKEN_KEY);
    state.token = null;
    askToken("The gateway refused this token.");
    return;
  }
  if (!response.ok) {
    state.gatewayReachable = false;
    renderBanner();
    return;
  }
  state.gatewayReachable = true;
  state.status = await response.json();
  renderStatus();
  renderBanner();
}

async function loadDevices() {
  try {
    const response = await fetch("/api/v1/devices", { headers: authHeaders() });
    if (!response.ok) return;
    const body = await response.json();
    for (const device of body.devices) {
      for (const reading of Object.values(device.last)) addReading(reading);
    }
  } catch (err) {
    // The stream and the status poll report an unreachable gateway.
  }
}

// ---- stream --------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let url = scheme + "//" + location.host + "/api/v1/stream?token=" + encodeURIComponent(state.token);
  if (state.lastSeq !== null) url += "&since=" + state.lastSeq;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onmessage = (event) => onMessage(JSON.parse(event.data));
  socket.onclose = () => {
    state.socket = null;
    state.streamUp = false;
    renderLink();
    renderBanner();
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  // Capped exponential backoff with jitter, so many dashboards do not return at once.
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  state.attempt += 1;
  state.reconnectTimer = setTimeout(connect, delay);
}

function onMessage(message) {
  switch (message.type) {
    case "hello":
      state.streamUp = true;
      state.attempt = 0;
      $("title").textContent = message.gateway;
      document.title = message.gateway + " · Edge gateway";
      renderLink();
      renderBanner();
      break;
    case "readings":
      for (const reading of message.readings) {
        addReading(reading);
        if (state.lastSeq === null || reading.seq > state.lastSeq) state.lastSeq = reading.seq;
      }
      break;
    case "gap":
      // This browser fell behind; reconnect from the gap so the log fills it.
      state.gaps += 1;
      state.lastSeq = message.from - 1;
      if (state.socket) state.socket.close();
      break;
    default:
      break;
  }
}

// ---- data ----------------------------------------------------------------------

function addReading(reading) {
  const key = reading.device + "\u0000" + reading.sensor;
  let series = state.series.get(key);
  if (!series) {
    series = { device: reading.device, sensor: reading.sensor, points: [], latest: null, tile: null };
    state.series.set(key, series);
  }
  if (!series.latest || reading.seq > series.latest.seq) series.latest = reading;
  if (typeof reading.value === "number") insertPoint(series.points, reading);
  state.dirty.add(series);
  if (!state.frameRequested) {
    state.frameRequested = true;
    requestAnimationFrame(renderTiles);
  }
}

function insertPoint(points, reading) {
  // Kept in seq order without duplicates: a replay after a gap may resend readings.
  let i = points.length;
  while (i > 0 && points[i - 1].seq > reading.seq) i -= 1;
  if (i > 0 && points[i - 1].seq === reading.seq) return;
  points.splice(i, 0, { seq: reading.seq, ts: reading.ts, value: reading.value });
}

function trim(points, now) {
  const from = now - WINDOW_SECONDS;
  let drop = 0;
  while (drop < points.length && points[drop].ts < from) drop += 1;
  if (drop) points.splice(0, drop);
  if (points.length > MAX_POINTS) {
    // Thin out evenly, always keeping the newest point.
    const step = points.length / MAX_POINTS;
    const kept = [];
    for (let i = points.length - 1; i >= 0 && kept.length < MAX_POINTS; i -= step) {
      kept.push(points[Math.floor(i)]);
    }
    points.splice(0, points.length, ...kept.reverse());
  }
}

// ---- rendering -----------------------------------------------------------------

function formatValue(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  const digits = Math.abs(value) >= 100 ? 1 : Math.abs(value) >= 1 ? 2 : 3;
  return value.toFixed(digits);
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "now";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return Math.round(seconds / 86400) + " d";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function makeTile(series) {
  const tile = el("article", "tile");
  tile.dataset.device = series.device;
  tile.dataset.sensor = series.sensor;
  const name = el("div", "name");
  name.append(el("span", "sensor", series.sensor), el("span", "device", series.device));
  const value = el("div", "value");
  const number = el("span", "number", "–");
  const unit = el("span", "unit", "");
  value.append(number, unit);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(SVG_NS, "polyline");
  svg.append(line);
  const range = el("div", "range");
  const low = el("span", "low", "");
  const age = el("span", "age", "");
  const high = el("span", "high", "");
  range.append(low, age, high);
  tile.append(name, value, svg, range);
  series.tile = { root: tile, number, unit, line, low, high, age };
  // Tiles stay in a stable order: by device, then sensor.
  const tiles = $("tiles");
  const key = series.device + "\u0000" + series.sensor;
  const after = [...tiles.children].find(
    (t) => t.dataset.device + "\u0000" + t.dataset.sensor > key,
  );
  tiles.insertBefore(tile, after || null);
  $("empty").hidden = true;
}

function renderTiles() {
  state.frameRequested = false;
  const now = Date.now() / 1000;
  for (const series of state.dirty) {
    if (!series.tile) makeTile(series);
    const t = series.tile;
    t.number.textContent = formatValue(series.latest.value);
    t.unit.textContent = series.latest.unit || "";
    trim(series.points, now);
    drawChart(series, now);
  }
  state.dirty.clear();
}

function drawChart(series, now) {
  const t = series.tile;
  const points = series.points;
  if (!points.length) {
    t.line.setAttribute("points", "");
    t.low.textContent = t.high.textContent = "";
    return;
  }
  let min = Infinity;
  let max = -Infinity;
  for (const p of points) {
    if (p.value < min) min = p.value;
    if (p.value > max) max = p.value;
  }
  const span = max - min || Math.abs(max) || 1;
  // The time axis grows with the data up to the full window, so a fresh chart is not
  // squeezed against its right edge.
  const width = Math.min(WINDOW_SECONDS, Math.max(MIN_CHART_SECONDS, now - points[0].ts));
  const from = now - width;
  const coords = points.map((p) => {
    const x = Math.max(0, ((p.ts - from) / width) * 100);
    const y = 38 - ((p.value - min) / span) * 36;
    return x.toFixed(2) + "," + y.toFixed(2);
  });
  t.line.setAttribute("points", coords.join(" "));
  t.low.textContent = "min " + formatValue(min);
  t.high.textContent = "max " + formatValue(max);
}

function renderAges() {
  const now = Date.now() / 1000;
  for (const series of state.series.values()) {
    if (!series.tile) continue;
    const age = now - series.latest.ts;
    series.tile.age.textContent = formatAge(age);
    series.tile.root.classList.toggle("stale", age > 60);
  }
}

function renderLink() {
  const link = $("link");
  if (state.streamUp) {
    link.textContent = "live";
    link.className = "pill pill-ok";
  } else {
    link.textContent = "reconnecting…";
    link.className = "pill pill-bad";
  }
}

function renderStatus() {
  const s = state.status;
  const uplinks = Object.entries(s.uplinks);
  $("st-uplinks").textContent = uplinks.length
    ? uplinks.map(([name, u]) => name + ": " + u.state).join(", ")
    : "none";
  $("st-depth").textContent = s.store.depth.toLocaleString();
  $("st-oldest").textContent =
    s.store.oldest_unsent_age === null ? "none" : formatAge(s.store.oldest_unsent_age);
  $("st-dropped").textContent = s.store.dropped.toLocaleString();
  $("st-dead").textContent = s.store.dead_letters.toLocaleString();
  $("st-seq").textContent = s.store.last_seq.toLocaleString();
  const list = $("devices");
  list.replaceChildren(
    ...Object.entries(s.devices).map(([id, d]) => {
      const item = el("li", "", id + " ");
      const cls = d.state === "open" ? "st-ok" : d.state === "starting" ? "st-warn" : "st-bad";
      item.append(el("span", "state " + cls, d.state));
      if (d.errors) item.append(" · " + d.errors + " errors");
      return item;
    }),
  );
}

function renderBanner() {
  const banner = $("banner");
  let text = "";
  let warn = false;
  if (!state.gatewayReachable || (!state.streamUp && state.attempt > 1)) {
    text = "Gateway unreachable: retrying. Values below may be out of date.";
  } else if (state.status) {
    const down = Object.entries(state.status.uplinks).filter(([, u]) => u.state !== "connected");
    if (down.length) {
      const names = down.map(([name, u]) => name + " (" + u.state + ")").join(", ");
      text = "Link to the cloud is down: " + names + ". Readings are kept in the log and sent when it returns.";
      warn = true;
    } else if (state.status.health && state.status.health.status !== "ok") {
      text = "Degraded: " + state.status.health.reasons.join("; ");
      warn = true;
    }
  }
  banner.textContent = text;
  banner.hidden = !text;
  banner.classList.toggle("warn", warn);
}

// The same link opened in a tab already showing the page changes only the fragment.
window.addEventListener("hashchange", () => {
  const token = tokenFromLink();
  if (!token) return;
  stop();
  state.token = token;
  $("login").hidden = true;
  start();
});

setInterval(renderAges, 1000);

if (state.token) start();
else askToken("");
