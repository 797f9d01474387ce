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
  positions: new Map(), // device -> {pending, track, card}
  history: null, // {device, sensor, preset, zoom: [{window, end}], request}
  deadCount: null,
  deadNext: null,
  deadPaged: false, // older pages are showing: no refresh from the top meanwhile
  commands: null,
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
  await Promise.all([pollStatus(), loadDevices(), loadCommands()]);
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
  if (reading.sensor === "lat" || reading.sensor === "lon") addPosition(reading);
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
  tile.tabIndex = 0;
  tile.setAttribute("role", "button");
  tile.setAttribute("aria-label", "History of " + series.sensor + " of " + series.device);
  const open = () => openHistory(series.device, series.sensor);
  tile.addEventListener("click", open);
  tile.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open();
    }
  });
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
  renderDeadDevices(Object.keys(s.devices));
  if (s.store.dead_letters !== state.deadCount) {
    state.deadCount = s.store.dead_letters;
    // New ones show at the top, unless the technician is reading older pages.
    if (!state.deadPaged) loadDeadLetters(false);
  }
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

// ---- positions (GPS) -------------------------------------------------------------

const TRACK_POINTS = 600;
const METRES_PER_DEGREE = 111320;

function addPosition(reading) {
  // A receiver reports lat and lon of one fix together (same time): they make one point.
  let pos = state.positions.get(reading.device);
  if (!pos) {
    pos = { pending: {}, track: [], card: null, latest: null };
    state.positions.set(reading.device, pos);
  }
  const pending = pos.pending;
  if (pending.ts !== reading.ts) {
    pos.pending = { ts: reading.ts };
  }
  pos.pending[reading.sensor] = reading.value;
  const { lat, lon, ts } = pos.pending;
  if (typeof lat !== "number" || typeof lon !== "number") return;
  pos.pending = {};
  const track = pos.track;
  let i = track.length;
  while (i > 0 && track[i - 1].ts > ts) i -= 1;
  if (i > 0 && track[i - 1].ts === ts) return; // the same fix again (RMC after GGA, a replay)
  track.splice(i, 0, { ts, lat, lon });
  if (track.length > TRACK_POINTS) track.splice(0, track.length - TRACK_POINTS);
  renderPosition(reading.device, pos);
}

function makePositionCard(device) {
  const card = el("article", "position");
  card.dataset.device = device;
  const head = el("div", "name");
  head.append(el("span", "sensor", "position"), el("span", "device", device));
  const readout = el("div", "readout", "–");
  const extra = el("div", "extra", "");
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 200 200");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Track of " + device);
  const path = document.createElementNS(SVG_NS, "polyline");
  path.setAttribute("class", "track");
  const dot = document.createElementNS(SVG_NS, "circle");
  dot.setAttribute("r", "5");
  dot.setAttribute("class", "here");
  svg.append(path, dot);
  const scale = el("div", "scale", "");
  card.append(head, readout, extra, svg, scale);
  $("positions").append(card);
  $("positions").hidden = false;
  return { root: card, readout, extra, path, dot, scale };
}

function formatDegrees(value, positive, negative) {
  return Math.abs(value).toFixed(5) + "° " + (value >= 0 ? positive : negative);
}

function renderPosition(device, pos) {
  if (!pos.card) pos.card = makePositionCard(device);
  const card = pos.card;
  const last = pos.track[pos.track.length - 1];
  card.readout.textContent = formatDegrees(last.lat, "N", "S") + ", " + formatDegrees(last.lon, "E", "W");
  const speed = state.series.get(device + "\u0000speed");
  const course = state.series.get(device + "\u0000course");
  const parts = [];
  if (speed && typeof speed.latest.value === "number") parts.push(formatValue(speed.latest.value) + " " + (speed.latest.unit || "m/s"));
  if (course && typeof course.latest.value === "number") parts.push(Math.round(course.latest.value) + "°");
  card.extra.textContent = parts.join(" · ");
  // An equirectangular projection around the track's middle: exact enough for the few
  // kilometres a site covers. No map tiles: the gateway's network may have no internet.
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const p of pos.track) {
    minLat = Math.min(minLat, p.lat); maxLat = Math.max(maxLat, p.lat);
    minLon = Math.min(minLon, p.lon); maxLon = Math.max(maxLon, p.lon);
  }
  const cos = Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180);
  const widthM = (maxLon - minLon) * METRES_PER_DEGREE * cos;
  const heightM = (maxLat - minLat) * METRES_PER_DEGREE;
  const span = Math.max(widthM, heightM, 20); // metres shown across the 180-unit square
  const toXY = (p) => {
    const x = 10 + ((p.lon - minLon) * METRES_PER_DEGREE * cos + (span - widthM) / 2) * (180 / span);
    const y = 190 - ((p.lat - minLat) * METRES_PER_DEGREE + (span - heightM) / 2) * (180 / span);
    return [x, y];
  };
  card.path.setAttribute("points", pos.track.map((p) => toXY(p).map((v) => v.toFixed(1)).join(",")).join(" "));
  const [x, y] = toXY(last);
  card.dot.setAttribute("cx", x.toFixed(1));
  card.dot.setAttribute("cy", y.toFixed(1));
  card.scale.textContent = "box ≈ " + (span >= 2000 ? (span / 1000).toFixed(1) + " km" : Math.round(span) + " m") + " across · " + pos.track.length + " fixes";
}

// ---- history -------------------------------------------------------------------

const CHART_W = 600;
const CHART_H = 200;
const HISTORY_POINTS = 300;
const MIN_ZOOM_SECONDS = 10;

function openHistory(device, sensor) {
  state.history = { device, sensor, preset: "1h", zoom: [], request: 0 };
  $("history").hidden = false;
  $("history-title").textContent = sensor + " · " + device;
  loadHistory();
  $("history").scrollIntoView({ block: "nearest" });
}

async function loadHistory() {
  const h = state.history;
  if (!h) return;
  const request = ++h.request;
  const zoom = h.zoom[h.zoom.length - 1];
  const params = new URLSearchParams({ device: h.device, sensor: h.sensor, points: HISTORY_POINTS });
  if (zoom) {
    params.set("window", zoom.window);
    params.set("end", zoom.end.toFixed(3));
  } else {
    params.set("window", h.preset);
  }
  for (const button of document.querySelectorAll("#history [data-window]")) {
    button.classList.toggle("active", !zoom && button.dataset.window === h.preset);
  }
  $("history-out").disabled = !h.zoom.length;
  $("history-info").textContent = "Loading…";
  let body;
  try {
    const response = await fetch("/api/v1/history?" + params, { headers: authHeaders(), cache: "no-store" });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (err) {
    if (request === h.request) $("history-info").textContent = "History unavailable: " + err.message;
    return;
  }
  if (request !== h.request || state.history !== h) return; // a newer request won
  h.data = body;
  drawHistory(body);
}

function drawHistory(body) {
  const buckets = body.buckets;
  const span = body.to - body.from;
  $("history-from").textContent = new Date(body.from * 1000).toLocaleString();
  $("history-to").textContent = new Date(body.to * 1000).toLocaleString();
  if (!buckets.length) {
    $("history-band").setAttribute("points", "");
    $("history-mean").setAttribute("points", "");
    $("history-high").textContent = $("history-low").textContent = "";
    $("history-info").textContent = "No numeric readings in this window.";
    return;
  }
  let low = Infinity;
  let high = -Infinity;
  for (const [, min, max] of buckets) {
    low = Math.min(low, min);
    high = Math.max(high, max);
  }
  const range = high - low || Math.abs(high) || 1;
  const x = (t) => (((t - body.from) / span) * CHART_W).toFixed(2);
  const y = (v) => (CHART_H - 6 - ((v - low) / range) * (CHART_H - 12)).toFixed(2);
  const width = body.bucket_seconds;
  // Steps, each as wide as its bucket (so a lone bucket still shows): the band spans
  // each bucket's min to max, the line its mean.
  const step = (value) => ([t, ...rest]) => [x(t) + "," + y(value(rest)), x(t + width) + "," + y(value(rest))];
  const top = buckets.flatMap(step(([, max]) => max));
  const bottom = buckets.flatMap(step(([min]) => min)).reverse();
  $("history-band").setAttribute("points", top.concat(bottom).join(" "));
  $("history-mean").setAttribute("points", buckets.flatMap(step(([, , mean]) => mean)).join(" "));
  $("history-high").textContent = formatValue(high);
  $("history-low").textContent = formatValue(low);
  const readings = buckets.reduce((n, b) => n + b[4], 0);
  let info = readings.toLocaleString() + " readings in " + buckets.length + (buckets.length === 1 ? " bucket" : " buckets") + " of " + formatAge(body.bucket_seconds);
  if (body.sampled) info += " (sampled: " + body.rows_scanned.toLocaleString() + " of " + body.rows_in_window.toLocaleString() + " log rows read)";
  $("history-info").textContent = info + ". Drag across the chart to zoom in.";
}

function chartFraction(event) {
  const box = $("history-chart").getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  return fraction;
}

(function historyControls() {
  const chart = $("history-chart");
  const select = $("history-select");
  let from = null;
  chart.addEventListener("pointerdown", (event) => {
    if (!state.history || !state.history.data) return;
    from = chartFraction(event);
    chart.setPointerCapture(event.pointerId);
    select.setAttribute("visibility", "visible");
    select.setAttribute("x", from * CHART_W);
    select.setAttribute("width", 0);
  });
  chart.addEventListener("pointermove", (event) => {
    if (from === null) return;
    const to = chartFraction(event);
    select.setAttribute("x", Math.min(from, to) * CHART_W);
    select.setAttribute("width", Math.abs(to - from) * CHART_W);
  });
  chart.addEventListener("pointerup", (event) => {
    if (from === null) return;
    const to = chartFraction(event);
    const start = Math.min(from, to);
    const end = Math.max(from, to);
    from = null;
    select.setAttribute("visibility", "hidden");
    const data = state.history.data;
    const span = data.to - data.from;
    const seconds = Math.max(MIN_ZOOM_SECONDS, Math.round((end - start) * span));
    if ((end - start) * span < 1) return; // a click, not a drag
    state.history.zoom.push({ window: seconds + "s", end: data.from + end * span });
    loadHistory();
  });
  for (const button of document.querySelectorAll("#history [data-window]")) {
    button.addEventListener("click", () => {
      state.history.preset = button.dataset.window;
      state.history.zoom = [];
      loadHistory();
    });
  }
  $("history-out").addEventListener("click", () => {
    state.history.zoom.pop();
    loadHistory();
  });
  $("history-close").addEventListener("click", () => {
    state.history = null;
    $("history").hidden = true;
  });
})();

// ---- dead letters --------------------------------------------------------------

const DEAD_PAGE = 50;

function renderDeadDevices(ids) {
  const select = $("dead-device");
  const known = new Set([...select.options].map((o) => o.value));
  for (const id of ids) {
    if (!known.has(id)) select.append(new Option(id, id));
  }
}

async function loadDeadLetters(older) {
  const params = new URLSearchParams({ limit: DEAD_PAGE });
  const device = $("dead-device").value;
  if (device) params.set("device", device);
  if (older && state.deadNext) params.set("before", state.deadNext);
  let body;
  try {
    const response = await fetch("/api/v1/dead-letters?" + params, { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) return;
    body = await response.json();
  } catch (err) {
    return; // the status poll reports an unreachable gateway
  }
  const rows = body.dead_letters.map((d) => {
    const row = el("tr");
    row.dataset.id = d.id;
    const hex = el("td", "hex", d.hex.replace(/(..)/g, "$1 ").trim());
    row.append(
      el("td", "when", new Date(d.ts * 1000).toLocaleString()),
      el("td", "", d.device),
      el("td", "", d.reason),
      hex,
      el("td", "text", d.text),
    );
    return row;
  });
  state.deadPaged = older;
  if (older) $("dead-list").append(...rows);
  else $("dead-list").replaceChildren(...rows);
  state.deadNext = body.next;
  $("dead-older").hidden = body.next === null;
  $("dead-empty").hidden = $("dead-list").children.length > 0;
}

$("dead-device").addEventListener("change", () => loadDeadLetters(false));
$("dead-refresh").addEventListener("click", () => loadDeadLetters(false));
$("dead-older").addEventListener("click", () => loadDeadLetters(true));

// ---- commands ------------------------------------------------------------------

async function loadCommands() {
  let body;
  try {
    const response = await fetch("/api/v1/commands", { headers: authHeaders() });
    if (!response.ok) return;
    body = await response.json();
  } catch (err) {
    return;
  }
  state.commands = body;
  const panel = $("commands");
  panel.hidden = false;
  const names = $("cmd-name");
  names.replaceChildren(...body.allow.map((name) => new Option(name, name)));
  $("cmd-device").replaceChildren(...body.devices.map((id) => new Option(id, id)));
  $("cmd-write").replaceChildren(
    ...body.writes.map((w, i) => {
      const bounds = w.min !== null || w.max !== null ? " (" + (w.min ?? "…") + " to " + (w.max ?? "…") + ")" : "";
      return new Option(w.device + " · " + w.sensor + bounds, String(i));
    }),
  );
  let note = "";
  if (!body.available) note = "Commands are not running on this gateway.";
  else if (!body.allow.length) note = "No command is allowed here ([commands] allow in the configuration).";
  else if (body.signed) note = "This gateway accepts signed commands only; the dashboard cannot sign them.";
  $("cmd-note").textContent = note;
  $("cmd-send").disabled = Boolean(note);
  showCommandFields();
}

function showCommandFields() {
  const name = $("cmd-name").value;
  $("cmd-device-field").hidden = !["device.read", "device.enable", "device.disable"].includes(name);
  $("cmd-write-field").hidden = name !== "device.write";
  $("cmd-value-field").hidden = name !== "device.write";
  $("cmd-level-field").hidden = name !== "log_level";
}

function parseValue(text) {
  const trimmed = text.trim();
  if (trimmed === "true" || trimmed === "false") return trimmed === "true";
  if (trimmed !== "" && Number.isFinite(Number(trimmed))) return Number(trimmed);
  return trimmed;
}

$("cmd-name").addEventListener("change", showCommandFields);

$("cmd-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("cmd-name").value;
  const args = {};
  if (!$("cmd-device-field").hidden) args.device = $("cmd-device").value;
  if (name === "device.write") {
    const rule = state.commands.writes[Number($("cmd-write").value)];
    if (!rule) return;
    args.device = rule.device;
    args.sensor = rule.sensor;
    args.value = parseValue($("cmd-value").value);
  }
  if (name === "log_level") args.level = $("cmd-level").value;
  const id = "dashboard-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 8);
  const result = $("cmd-result");
  result.hidden = false;
  result.className = "cmd-result";
  result.textContent = "Sent " + name + ", waiting for the answer…";
  $("cmd-send").disabled = true;
  try {
    const response = await fetch("/api/v1/commands/" + encodeURIComponent(name), {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ id, args }),
    });
    const body = await response.json();
    showCommandResult(name, body);
  } catch (err) {
    result.className = "cmd-result failed";
    result.textContent = name + ": no answer (" + err.message + ")";
  } finally {
    $("cmd-send").disabled = false;
  }
});

function showCommandResult(name, body) {
  const result = $("cmd-result");
  result.dataset.ok = String(Boolean(body.ok));
  if (!body.ok) {
    result.className = "cmd-result failed";
    result.textContent = name + " refused: " + body.error;
    return;
  }
  result.className = "cmd-result ok";
  const r = body.result;
  if (name === "device.write" && r && "confirmed" in r) {
    result.textContent = r.device + " confirmed " + r.sensor + " = " + String(r.confirmed);
  } else {
    result.textContent = name + " ok: " + JSON.stringify(r);
  }
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
