// Switchboard live dashboard: trade the admin token for a socket token, join
// `admin:dashboard` with phoenix.js and render the cluster view the node pushes every second.
// Node names and topics are data: they only ever reach the DOM through textContent.
import { Socket } from "/vendor/phoenix/phoenix.mjs";

const STORAGE_KEY = "switchboard.dashboard.adminToken";
const HISTORY = 300; // samples kept per node (about five minutes at one a second)
const WINDOW_S = 300; // seconds shown by the charts, at most
const MIN_SPAN_S = 20; // until that much history exists, the charts stretch what there is
const GAP_S = 5; // a longer silence breaks the chart line instead of bridging it
const STALE_S = 3; // no view for this long: the numbers are marked stale
const FAILED_CONNECTS = 3; // after this many failed connects, check the admin token again
const TOKEN_REFRESH_MS = 30 * 60 * 1000; // socket tokens live an hour; renew well before
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 300;
const CHART_H = 64;

const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  updated: $("updated"),
  signOut: $("sign-out"),
  login: $("login"),
  adminToken: $("admin-token"),
  connect: $("connect"),
  loginError: $("login-error"),
  dashboard: $("dashboard"),
  totalNodes: $("total-nodes"),
  totalConnections: $("total-connections"),
  totalJoined: $("total-joined"),
  totalIn: $("total-in"),
  totalOut: $("total-out"),
  window: $("window"),
  nodes: $("nodes"),
  nodesEmpty: $("nodes-empty"),
  topics: $("topics"),
  topicsEmpty: $("topics-empty"),
};

// ---------------------------------------------------------------- small helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

const num = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);
const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const rateFormat = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const formatInt = (value) => intFormat.format(num(value));
const formatRate = (value) => rateFormat.format(num(value));
const formatMB = (bytes) => `${rateFormat.format(num(bytes) / (1024 * 1024))} MB`;

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

/** A fixed-size ring buffer: push forever, keep the newest `capacity` items in order. */
class Ring {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  push(item) {
    const index = (this.start + this.length) % this.capacity;
    this.items[index] = item;
    if (this.length < this.capacity) this.length += 1;
    else this.start = (this.start + 1) % this.capacity;
  }

  clear() {
    this.start = 0;
    this.length = 0;
  }

  get last() {
    return this.length ? this.items[(this.start + this.length - 1) % this.capacity] : undefined;
  }

  toArray() {
    const out = [];
    for (let i = 0; i < this.length; i += 1) out.push(this.items[(this.start + i) % this.capacity]);
    return out;
  }
}

// ---------------------------------------------------------------- charts

/** A rounded-up axis maximum: 1, 2, 5, 10, 20, 50, ... */
function niceMax(value) {
  if (!(value > 1)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

/**
 * A tiny SVG line chart over the last WINDOW_S seconds, built inside `figure`.
 * `series` is [{key, label, className, format}]; points are {t (unix seconds), [key]: value}.
 */
function createChart(figure, title, series) {
  figure.classList.add("chart");
  const caption = el("figcaption");
  caption.append(el("span", "chart-title", title));
  const legend = el("span", "legend");
  const values = series.map((s) => {
    const item = el("span", `legend-item ${s.className}`);
    const value = el("span", "legend-value", "–");
    item.append(el("span", "swatch"), `${s.label} `, value);
    legend.append(item);
    return value;
  });
  caption.append(legend);

  const plot = el("div", "plot");
  const scale = el("span", "scale", "");
  const graph = svg("svg", {
    viewBox: `0 0 ${CHART_W} ${CHART_H}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": `${title}, up to the last ${WINDOW_S / 60} minutes`,
  });
  graph.append(
    svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: CHART_H / 2, y2: CHART_H / 2 }),
    svg("line", { class: "axis", x1: 0, x2: CHART_W, y1: CHART_H - 0.5, y2: CHART_H - 0.5 }),
  );
  const paths = series.map((s, i) => {
    const area = i === 0 ? svg("path", { class: `area ${s.className}` }) : null;
    const line = svg("path", { class: `line ${s.className}` });
    if (area) graph.append(area);
    graph.append(line);
    return { area, line };
  });
  plot.append(graph, scale);
  figure.replaceChildren(caption, plot);
  graph.dataset.points = "0";

  return {
    update(points) {
      const latest = points.at(-1);
      series.forEach((s, i) => {
        values[i].textContent = latest ? s.format(latest[s.key]) : "–";
      });
      const now = latest ? latest.t : 0;
      const visible = points.filter((p) => p.t >= now - WINDOW_S);
      const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - (visible[0]?.t ?? now)));
      const from = now - span;
      let peak = 0;
      for (const p of visible) for (const s of series) peak = Math.max(peak, num(p[s.key]));
      const top = niceMax(peak);
      scale.textContent = series[0].format === formatRate ? `${formatInt(top)}/s` : formatInt(top);
      const x = (t) => (((t - from) / span) * CHART_W).toFixed(1);
      const y = (v) => (CHART_H - 1 - (num(v) / top) * (CHART_H - 4)).toFixed(1);

      series.forEach((s, i) => {
        // Split into runs without long gaps, so a disconnect shows as a hole.
        const runs = [];
        let previous = null;
        for (const p of visible) {
          if (!previous || p.t - previous.t > GAP_S) runs.push([]);
          runs.at(-1).push(p);
          previous = p;
        }
        const line = runs
          .map((run) => `M${run.map((p) => `${x(p.t)},${y(p[s.key])}`).join("L")}`)
          .join("");
        paths[i].line.setAttribute("d", line);
        if (paths[i].area) {
          const area = runs
            .filter((run) => run.length > 1)
            .map(
              (run) =>
                `M${x(run[0].t)},${CHART_H}` +
                `L${run.map((p) => `${x(p.t)},${y(p[s.key])}`).join("L")}` +
                `L${x(run.at(-1).t)},${CHART_H}Z`,
            )
            .join("");
          paths[i].area.setAttribute("d", area);
        }
      });
      graph.dataset.points = String(visible.length);
      graph.dataset.max = String(peak);
      return span;
    },
  };
}

const CONNECTIONS_SERIES = [
  { key: "connections", label: "now", className: "s-connections", format: formatInt },
];
const MESSAGES_SERIES = [
  { key: "in", label: "in", className: "s-in", format: formatRate },
  { key: "out", label: "out", className: "s-out", format: formatRate },
];

// ---------------------------------------------------------------- rendering

const clusterHistory = new Ring(HISTORY);
const clusterCharts = {
  connections: createChart($("cluster-connections-chart"), "connections", CONNECTIONS_SERIES),
  messages: createChart($("cluster-messages-chart"), "messages/s", MESSAGES_SERIES),
};
/** node name -> {history: Ring, card: {...elements}} */
const nodes = new Map();
let lastViewAt = 0;

function metric(list, label, field) {
  const item = el("div", "metric");
  const value = el("dd", null, "–");
  value.dataset.field = field;
  item.append(el("dt", null, label), value);
  list.append(item);
  return value;
}

function createNodeCard(name) {
  const root = el("article", "card node-card");
  root.dataset.node = name;

  const head = el("div", "node-head");
  const title = el("h3", "node-name", name);
  title.title = name;
  const accepting = el("span", "badge");
  accepting.dataset.field = "accepting";
  head.append(title, accepting);

  const metrics = el("dl", "metrics");
  const fields = {
    connections: metric(metrics, "connections", "connections"),
    joined: metric(metrics, "channels", "joined_channels"),
    inRate: metric(metrics, "in / s", "in_per_s"),
    outRate: metric(metrics, "out / s", "out_per_s"),
    memory: metric(metrics, "memory", "memory"),
  };

  const health = el("dl", "health");
  const actorsRow = el("div", "health-row");
  const actorsValue = el("dd");
  actorsRow.append(el("dt", null, "actors"), actorsValue);
  const actorsBadge = el("span", "badge");
  actorsBadge.dataset.field = "actors";
  const restarts = el("span", "counts");
  restarts.dataset.field = "restarts";
  const gaveUp = el("span", "reason");
  gaveUp.dataset.field = "gave_up";
  actorsValue.append(actorsBadge, restarts, gaveUp);

  const mailboxRow = el("div", "health-row");
  const mailbox = el("dd", "counts");
  mailbox.dataset.field = "mailbox";
  mailboxRow.append(el("dt", null, "mailboxes"), mailbox);

  const pubsubRow = el("div", "health-row");
  const pubsubValue = el("dd");
  pubsubRow.append(el("dt", null, "pub/sub"), pubsubValue);
  const backend = el("span", "backend");
  backend.dataset.field = "backend";
  const pubsubBadge = el("span", "badge");
  pubsubBadge.dataset.field = "pubsub";
  const reason = el("span", "reason");
  reason.dataset.field = "pubsub_reason";
  pubsubValue.append(backend, pubsubBadge, reason);
  health.append(actorsRow, mailboxRow, pubsubRow);

  const charts = el("div", "charts");
  const connectionsFigure = el("figure");
  connectionsFigure.dataset.chart = "connections";
  const messagesFigure = el("figure");
  messagesFigure.dataset.chart = "messages";
  charts.append(connectionsFigure, messagesFigure);

  root.append(head, metrics, health, charts);
  return {
    root,
    accepting,
    fields,
    actorsBadge,
    restarts,
    gaveUp,
    mailbox,
    backend,
    pubsubBadge,
    reason,
    charts: {
      connections: createChart(connectionsFigure, "connections", CONNECTIONS_SERIES),
      messages: createChart(messagesFigure, "messages/s", MESSAGES_SERIES),
    },
  };
}

function setBadge(badge, state, text) {
  badge.dataset.state = state;
  badge.textContent = text;
}

/** "cache 0 · limiter 2 · presence 0" with non-zero counts highlighted. */
function renderCounts(container, counts, alert) {
  const entries = Object.entries(counts && typeof counts === "object" ? counts : {});
  container.replaceChildren(
    ...entries.map(([name, value]) => {
      const item = el("span", num(value) > 0 ? `count ${alert}` : "count");
      item.dataset.name = name;
      item.append(`${name} `, el("b", null, formatInt(value)));
      return item;
    }),
  );
}

function updateNodeCard(card, sample) {
  setBadge(card.accepting, sample.accepting ? "ok" : "warn", sample.accepting ? "accepting" : "draining");
  card.fields.connections.textContent = formatInt(sample.connections);
  card.fields.joined.textContent = formatInt(sample.joined_channels);
  card.fields.inRate.textContent = formatRate(sample.in_per_s);
  card.fields.outRate.textContent = formatRate(sample.out_per_s);
  card.fields.memory.textContent = formatMB(sample.memory_bytes);

  const actors = sample.actors && typeof sample.actors === "object" ? sample.actors : {};
  const healthy = actors.healthy !== false;
  setBadge(card.actorsBadge, healthy ? "ok" : "bad", healthy ? "healthy" : "unhealthy");
  renderCounts(card.restarts, actors.restarts, "alert");
  card.gaveUp.textContent = actors.gave_up ? `gave up: ${actors.gave_up}` : "";
  renderCounts(card.mailbox, actors.mailbox, "busy");

  const pubsub = sample.pubsub && typeof sample.pubsub === "object" ? sample.pubsub : {};
  card.backend.textContent = String(pubsub.backend ?? "?");
  setBadge(card.pubsubBadge, pubsub.connected ? "ok" : "bad", pubsub.connected ? "connected" : "disconnected");
  card.reason.textContent = pubsub.reason ? String(pubsub.reason) : "";
  card.root.classList.toggle("unhealthy", !healthy || !pubsub.connected);
}

function renderTopics(topics) {
  ui.topics.replaceChildren(
    ...topics.map((entry) => {
      const row = el("tr");
      const topic = String(entry?.topic ?? "");
      row.dataset.topic = topic;
      const name = el("td", "topic", topic);
      name.title = topic;
      const subscribers = el("td", "num", formatInt(entry?.subscribers));
      subscribers.dataset.field = "subscribers";
      const presences = el("td", "num", formatInt(entry?.presences));
      presences.dataset.field = "presences";
      row.append(name, subscribers, presences);
      return row;
    }),
  );
  ui.topicsEmpty.hidden = topics.length > 0;
}

function render(view) {
  const samples = Array.isArray(view?.nodes) ? view.nodes.filter((s) => s && s.node != null) : [];
  const topics = Array.isArray(view?.topics) ? view.topics : [];
  lastViewAt = Date.now();
  tick();

  const seen = new Set();
  for (const sample of samples) {
    const name = String(sample.node);
    seen.add(name);
    let entry = nodes.get(name);
    if (!entry) {
      entry = { history: new Ring(HISTORY), card: createNodeCard(name) };
      nodes.set(name, entry);
    }
    // Other nodes' samples can show up in several views: record each one once.
    const t = num(sample.ts);
    if (!entry.history.last || t > entry.history.last.t) {
      entry.history.push({
        t,
        connections: num(sample.connections),
        in: num(sample.in_per_s),
        out: num(sample.out_per_s),
      });
    }
    updateNodeCard(entry.card, sample);
    const points = entry.history.toArray();
    entry.card.charts.connections.update(points);
    entry.card.charts.messages.update(points);
  }
  // A node that stopped reporting has left the cluster view: drop its card and history.
  for (const name of [...nodes.keys()]) if (!seen.has(name)) nodes.delete(name);
  const order = samples.map((s) => nodes.get(String(s.node)).card.root);
  const current = [...ui.nodes.children];
  if (order.length !== current.length || order.some((node, i) => node !== current[i])) {
    ui.nodes.replaceChildren(...order);
  }
  ui.nodesEmpty.hidden = samples.length > 0;

  const sum = (key) => samples.reduce((total, s) => total + num(s[key]), 0);
  const total = {
    t: num(view?.ts) || Date.now() / 1000,
    connections: sum("connections"),
    in: sum("in_per_s"),
    out: sum("out_per_s"),
  };
  if (!clusterHistory.last || total.t > clusterHistory.last.t) clusterHistory.push(total);
  ui.totalNodes.textContent = formatInt(samples.length);
  ui.totalConnections.textContent = formatInt(total.connections);
  ui.totalJoined.textContent = formatInt(sum("joined_channels"));
  ui.totalIn.textContent = formatRate(total.in);
  ui.totalOut.textContent = formatRate(total.out);
  const points = clusterHistory.toArray();
  const span = clusterCharts.connections.update(points);
  clusterCharts.messages.update(points);
  ui.window.textContent = span >= 90 ? `last ${Math.round(span / 60)} min` : `last ${Math.round(span)} s`;

  renderTopics(topics);
}

/** Once a second: how fresh are the numbers on screen? */
function tick() {
  if (!session || !lastViewAt) {
    ui.updated.hidden = true;
    return;
  }
  const age = Math.max(0, Math.round((Date.now() - lastViewAt) / 1000));
  ui.updated.hidden = false;
  ui.updated.textContent = age < 2 ? "live" : `updated ${age} s ago`;
  const stale = age >= STALE_S;
  ui.updated.classList.toggle("stale", stale);
  ui.dashboard.dataset.stale = String(stale);
}

// ---------------------------------------------------------------- session

class TokenError extends Error {
  constructor(message, fatal) {
    super(message);
    this.fatal = fatal; // the admin token itself is refused: stop and ask again
  }
}

/** Trade the admin token for a short-lived socket token. */
async function fetchSocketToken(adminToken) {
  let response;
  try {
    response = await fetch("/api/admin/socket-token", {
      method: "POST",
      headers: { Authorization: `Bearer ${adminToken}` },
      cache: "no-store",
    });
  } catch {
    throw new TokenError("Could not reach the server.", false);
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) throw new TokenError("wrong admin token", true);
  if (response.status === 404) {
    throw new TokenError(
      "This node has no admin token configured (SWITCHBOARD_ADMIN_TOKEN is unset), " +
        "so its dashboard is off.",
      true,
    );
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    throw new TokenError(`Too many attempts; try again${wait ? ` in ${wait} s` : " later"}.`, false);
  }
  if (!response.ok || typeof body.token !== "string") {
    const detail = typeof body.error === "string" ? `: ${body.error}` : "";
    throw new TokenError(`Token request failed (HTTP ${response.status})${detail}.`, false);
  }
  return body.token;
}

/** The live connection: {adminToken, token, socket, channel, ...}, or null. */
let session = null;
let attempt = 0;

function showLogin(error) {
  ui.dashboard.hidden = true;
  ui.signOut.hidden = true;
  ui.updated.hidden = true;
  ui.login.hidden = false;
  ui.connect.disabled = false;
  if (error) {
    ui.loginError.textContent = error;
    ui.loginError.hidden = false;
  }
  ui.adminToken.focus();
}

function clearData() {
  nodes.clear();
  ui.nodes.replaceChildren();
  ui.nodesEmpty.hidden = false;
  renderTopics([]);
  clusterHistory.clear();
  clusterCharts.connections.update([]);
  clusterCharts.messages.update([]);
  for (const id of ["totalNodes", "totalConnections", "totalJoined", "totalIn", "totalOut"]) {
    ui[id].textContent = "–";
  }
  ui.window.textContent = "";
  lastViewAt = 0;
}

function endSession() {
  const current = session;
  session = null;
  attempt += 1;
  if (current) {
    clearInterval(current.refreshTimer);
    current.channel.leave();
    current.socket.disconnect();
  }
  setStatus("idle", "not connected");
  clearData();
}

/** Get a fresh socket token; on a refused admin token end the session. */
async function renewToken(current) {
  if (current.renewing) return;
  current.renewing = true;
  try {
    const token = await fetchSocketToken(current.adminToken);
    if (session === current) current.token = token;
  } catch (err) {
    if (session === current && err.fatal) {
      sessionStorage.removeItem(STORAGE_KEY);
      endSession();
      showLogin(err.message);
    }
  } finally {
    current.renewing = false;
  }
}

async function connect(adminToken) {
  endSession();
  const mine = attempt;
  ui.loginError.hidden = true;
  ui.connect.disabled = true;
  setStatus("connecting", "connecting…");

  let token;
  try {
    token = await fetchSocketToken(adminToken);
  } catch (err) {
    if (mine !== attempt) return;
    if (err.fatal) sessionStorage.removeItem(STORAGE_KEY);
    setStatus("idle", "not connected");
    showLogin(err.message);
    return;
  }
  if (mine !== attempt) return;
  sessionStorage.setItem(STORAGE_KEY, adminToken);
  ui.adminToken.value = "";

  const current = { adminToken, token, failures: 0, renewing: false };
  // phoenix.js calls the params closure on every (re)connect, so renewed tokens are used.
  const socket = new Socket("/admin/socket", { params: () => ({ token: current.token }) });
  const channel = socket.channel("admin:dashboard", {});
  Object.assign(current, { socket, channel });
  session = current;
  const live = () => session === current;

  socket.onOpen(() => {
    if (!live()) return;
    current.failures = 0;
    setStatus("connecting", "joining…");
  });
  socket.onClose(() => {
    if (!live()) return;
    setStatus("reconnecting", "reconnecting…");
    current.failures += 1;
    // Repeated failures may mean an expired socket token or a changed admin token.
    if (current.failures % FAILED_CONNECTS === 0) renewToken(current);
  });
  channel.onError(() => live() && setStatus("reconnecting", "reconnecting…"));
  channel.on("stats", (view) => live() && render(view));
  current.refreshTimer = setInterval(() => renewToken(current), TOKEN_REFRESH_MS);

  socket.connect();
  channel
    .join()
    .receive("ok", (view) => {
      if (!live()) return;
      setStatus("connected", "connected");
      ui.login.hidden = true;
      ui.loginError.hidden = true;
      ui.dashboard.hidden = false;
      ui.signOut.hidden = false;
      render(view);
    })
    .receive("error", (response) => {
      if (!live()) return;
      const reason = response?.reason ?? JSON.stringify(response);
      endSession();
      showLogin(`The node refused the dashboard channel: ${reason}`);
    })
    .receive("timeout", () => live() && setStatus("reconnecting", "join timed out, retrying…"));
}

ui.login.addEventListener("submit", (event) => {
  event.preventDefault();
  const adminToken = ui.adminToken.value.trim();
  if (!adminToken) {
    showLogin("Enter the admin token.");
    return;
  }
  connect(adminToken);
});

ui.signOut.addEventListener("click", () => {
  sessionStorage.removeItem(STORAGE_KEY);
  endSession();
  ui.loginError.hidden = true;
  showLogin();
});

setInterval(tick, 1000);

const stored = sessionStorage.getItem(STORAGE_KEY);
if (stored) connect(stored);
else showLogin();
document.body.dataset.ready = "true";
