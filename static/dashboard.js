// Switchboard console: trade the admin token for a socket token, join `admin:dashboard` with
// phoenix.js for the cluster view the node pushes every second, and act through the console
// HTTP API (/api/console/*, the same admin token as a bearer). Node names, topics, users and
// payloads are data: they only ever reach the DOM through textContent.
import { Socket } from "/vendor/phoenix/phoenix.mjs";

const STORAGE_KEY = "switchboard.dashboard.adminToken";
const KEEP_S = 3600; // seconds of points kept per node (the server keeps the same hour)
const BUCKETS = 240; // points drawn per chart line, whatever the window
const MIN_SPAN_S = 20; // until that much history exists, the charts stretch what there is
const GAP_S = 5; // a longer silence breaks a chart line instead of bridging it
const CARRY_S = 2.5; // a node's value counts towards cluster sums this long after its sample
const STALE_S = 3; // no view for this long: the numbers are marked stale
const FAILED_CONNECTS = 3; // after this many failed connects, check the admin token again
const TOKEN_REFRESH_MS = 30 * 60 * 1000; // socket tokens live an hour; renew well before
const TOPIC_POLL_MS = 2000; // an open topic's traffic is fetched this often
const PAGE = 50; // rows per page of connections and topics
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
  allClear: $("all-clear"),
  alertList: $("alert-list"),
  deaf: $("deaf"),
  totalNodes: $("total-nodes"),
  totalConnections: $("total-connections"),
  totalJoined: $("total-joined"),
  totalIn: $("total-in"),
  totalOut: $("total-out"),
  chartScope: $("chart-scope"),
  chartWindow: $("chart-window"),
  charts: $("charts"),
  nodes: $("nodes"),
  nodesEmpty: $("nodes-empty"),
  topics: $("topics"),
  topicsShown: $("topics-shown"),
  topicsEmpty: $("topics-empty"),
  showAllTopics: $("show-all-topics"),
  events: $("events"),
  eventsEmpty: $("events-empty"),
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
const rateFormat = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const msFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const formatInt = (value) => intFormat.format(num(value));
const formatRate = (value) => rateFormat.format(num(value));
const formatMs = (value) => `${msFormat.format(num(value))} ms`;
const formatPercent = (value) => `${rateFormat.format(num(value))} %`;
const formatMB = (value) => `${rateFormat.format(num(value))} MB`;
const clock = (seconds) =>
  new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour12: false });

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const h = Math.floor(s / 3600);
  return `${h} h ${Math.floor((s % 3600) / 60)} min`;
}

const plural = (count, noun) => `${formatInt(count)} ${noun}${num(count) === 1 ? "" : "s"}`;

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

  get last() {
    return this.length ? this.items[(this.start + this.length - 1) % this.capacity] : undefined;
  }

  *[Symbol.iterator]() {
    for (let i = 0; i < this.length; i += 1) yield this.items[(this.start + i) % this.capacity];
  }
}

// ---------------------------------------------------------------- the console HTTP API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Call /api/console/... with the admin token; the JSON answer, or an ApiError. */
async function api(path, { method = "GET", body } = {}) {
  if (!session) throw new ApiError(0, "not signed in");
  let response;
  try {
    response = await fetch(`/api/console/${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${session.adminToken}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "could not reach the server");
  }
  const answer = await response.json().catch(() => ({}));
  if (response.status === 429) {
    throw new ApiError(429, `too many requests; try again in ${answer.retry_after ?? "a few"} s`);
  }
  if (!response.ok && !(response.status === 404 && path === "disconnect")) {
    const problems = Array.isArray(answer.problems) ? `: ${answer.problems.join("; ")}` : "";
    throw new ApiError(response.status, `${answer.error || `HTTP ${response.status}`}${problems}`);
  }
  return answer;
}

const missingNote = (missing) =>
  missing?.length ? ` (no answer from ${missing.map((id) => id.replace(/:[^:]*$/, "")).join(", ")})` : "";

// ---------------------------------------------------------------- history

/** node name -> Ring of points {t, connections, in_per_s, ...} */
const history = new Map();
const METRICS = [
  "connections", "in_per_s", "out_per_s", "p50_ms", "p99_ms", "rate_limited_per_s",
  "slow_per_s", "restarts", "mailbox", "cpu_percent", "memory_mb",
];

function ringOf(name) {
  let ring = history.get(name);
  if (!ring) {
    ring = new Ring(KEEP_S + 800);
    history.set(name, ring);
  }
  return ring;
}

function pointOf(sample) {
  const point = { t: num(sample.ts) };
  for (const key of METRICS) point[key] = num(sample[key]);
  point.memory_mb = num(sample.memory_bytes) / (1024 * 1024);
  return point;
}

function addSample(sample) {
  const ring = ringOf(sample.name);
  const point = pointOf(sample);
  if (!ring.last || point.t > ring.last.t) ring.push(point);
}

/** The server's hour of history, so the charts start full after a reload: the last five
 * minutes point by point, the hour before in 15-second steps (a chart's bucket then). */
async function loadHistory(current) {
  let fine;
  let coarse;
  try {
    [fine, coarse] = await Promise.all([api("history?minutes=5&step=1"), api("history?minutes=60&step=15")]);
  } catch {
    return; // the live points still come; the charts just start empty
  }
  if (session !== current) return;
  const names = new Set([...Object.keys(fine.nodes || {}), ...Object.keys(coarse.nodes || {})]);
  for (const name of names) {
    const ring = new Ring(KEEP_S + 800);
    const live = [...(history.get(name) || [])];
    const fineFirst = fine.nodes?.[name]?.t?.[0] ?? Infinity;
    const liveFirst = live.length ? live[0].t : Infinity;
    const add = (answer, before) => {
      const series = answer.nodes?.[name];
      if (!series) return;
      series.t.forEach((t, i) => {
        // A coarse point stands for the bucket from t to t + step: only whole ones before
        // the finer points count.
        const end = answer.step > 1 ? t + answer.step : t;
        if (end > before || (ring.last && t <= ring.last.t)) return;
        const point = { t };
        for (const key of answer.metrics) point[key] = num(series[key][i]);
        ring.push(point);
      });
    };
    add(coarse, Math.min(fineFirst, liveFirst));
    add(fine, liveFirst);
    for (const point of live) ring.push(point);
    history.set(name, ring);
  }
  drawCharts();
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
 * Each chart: series of one metric each. `within` combines a node's points inside one
 * bucket (mean, max, sum); `across` combines nodes (sum, max) for the whole cluster.
 */
const CHARTS = [
  {
    id: "connections",
    title: "connections",
    series: [{ key: "connections", label: "open", cls: "s-connections", format: formatInt, within: "mean", across: "sum" }],
  },
  {
    id: "messages",
    title: "messages / s",
    series: [
      { key: "in_per_s", label: "in", cls: "s-in", format: formatRate, within: "mean", across: "sum" },
      { key: "out_per_s", label: "out", cls: "s-out", format: formatRate, within: "mean", across: "sum" },
    ],
  },
  {
    id: "latency",
    title: "broadcast fan-out",
    series: [
      { key: "p50_ms", label: "p50", cls: "s-in", format: formatMs, within: "mean", across: "max" },
      { key: "p99_ms", label: "p99", cls: "s-out", format: formatMs, within: "max", across: "max" },
    ],
  },
  {
    id: "refusals",
    title: "refused and dropped / s",
    series: [
      { key: "rate_limited_per_s", label: "rate-limited", cls: "s-warn", format: formatRate, within: "mean", across: "sum" },
      { key: "slow_per_s", label: "slow consumers", cls: "s-bad", format: formatRate, within: "mean", across: "sum" },
    ],
  },
  {
    id: "actors",
    title: "actors",
    series: [
      { key: "restarts", label: "restarts", cls: "s-bad", format: formatInt, within: "sum", across: "sum" },
      { key: "mailbox", label: "deepest mailbox", cls: "s-connections", format: formatInt, within: "max", across: "max" },
    ],
  },
  {
    id: "cpu",
    title: "CPU",
    series: [{ key: "cpu_percent", label: "busiest node", cls: "s-in", format: formatPercent, within: "mean", across: "max" }],
  },
  {
    id: "memory",
    title: "memory",
    series: [{ key: "memory_mb", label: "resident", cls: "s-connections", format: formatMB, within: "mean", across: "sum" }],
  },
];

/** One node's `key` per bucket of `width` seconds from `from`: an array of numbers or null. */
function bucketize(ring, key, from, width, how) {
  const sums = new Array(BUCKETS).fill(null);
  const counts = new Array(BUCKETS).fill(0);
  if (!ring) return sums;
  for (const point of ring) {
    if (point.t < from) continue;
    const i = Math.min(BUCKETS - 1, Math.floor((point.t - from) / width));
    const value = num(point[key]);
    if (sums[i] === null) sums[i] = value;
    else if (how === "max") sums[i] = Math.max(sums[i], value);
    else sums[i] += value;
    counts[i] += 1;
  }
  if (how === "mean") for (let i = 0; i < BUCKETS; i += 1) if (counts[i]) sums[i] /= counts[i];
  return sums;
}

/** Carry each value forward over up to `buckets` empty buckets: nodes report at different
 * moments, so without this a cluster sum would count some nodes in one bucket and the
 * others in the next. */
function carried(values, buckets) {
  const out = values.slice();
  let last = null;
  let age = 0;
  for (let i = 0; i < out.length; i += 1) {
    if (out[i] !== null) {
      last = out[i];
      age = 0;
    } else if (last !== null && age < buckets) {
      out[i] = last;
      age += 1;
    }
  }
  return out;
}

function combine(perNode, how) {
  return perNode[0].map((_, i) => {
    const values = perNode.map((values) => values[i]).filter((v) => v !== null);
    if (!values.length) return null;
    return how === "max" ? Math.max(...values) : values.reduce((a, b) => a + b, 0);
  });
}

function createChart(spec) {
  const figure = el("figure", "chart");
  figure.dataset.chart = spec.id;
  const caption = el("figcaption");
  caption.append(el("span", "chart-title", spec.title));
  const legend = el("span", "legend");
  const values = spec.series.map((s) => {
    const item = el("span", `legend-item ${s.cls}`);
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
    "aria-label": spec.title,
  });
  graph.append(
    svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: CHART_H / 2, y2: CHART_H / 2 }),
    svg("line", { class: "axis", x1: 0, x2: CHART_W, y1: CHART_H - 0.5, y2: CHART_H - 0.5 }),
  );
  const paths = spec.series.map((s, i) => {
    const area = i === 0 ? svg("path", { class: `area ${s.cls}` }) : null;
    const line = svg("path", { class: `line ${s.cls}` });
    if (area) graph.append(area);
    graph.append(line);
    return { area, line };
  });
  const cursor = svg("line", { class: "cursor", x1: 0, x2: 0, y1: 0, y2: CHART_H, visibility: "hidden" });
  graph.append(cursor);
  const tooltip = el("div", "tooltip");
  tooltip.hidden = true;
  tooltip.setAttribute("role", "tooltip");
  const axis = el("div", "time-axis");
  plot.append(graph, scale, tooltip);
  figure.append(caption, plot, axis);
  graph.dataset.points = "0";

  let drawn = null; // {from, width, lines: [[values]]}
  let pointerX = null; // where the pointer is over the plot, while it is

  function showTooltip(clientX) {
    pointerX = clientX;
    if (!drawn) return;
    const box = graph.getBoundingClientRect();
    const ratio = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
    let i = Math.min(BUCKETS - 1, Math.floor(ratio * BUCKETS));
    // the nearest bucket that has a value
    for (let d = 0; d < BUCKETS; d += 1) {
      if (drawn.lines.some((line) => line[i + d] !== null && line[i + d] !== undefined)) {
        i += d;
        break;
      }
      if (drawn.lines.some((line) => line[i - d] !== null && line[i - d] !== undefined)) {
        i -= d;
        break;
      }
    }
    if (!drawn.lines.some((line) => line[i] !== null && line[i] !== undefined)) return;
    const x = ((i + 0.5) / BUCKETS) * CHART_W;
    cursor.setAttribute("x1", x.toFixed(1));
    cursor.setAttribute("x2", x.toFixed(1));
    cursor.setAttribute("visibility", "visible");
    const start = drawn.from + i * drawn.width;
    const when = drawn.width >= 2 ? `${clock(start)}–${clock(start + drawn.width)}` : clock(start);
    tooltip.replaceChildren(
      el("div", "tooltip-time", when),
      ...spec.series.map((s, k) => {
        const row = el("div", `tooltip-row ${s.cls}`);
        const v = drawn.lines[k][i];
        row.append(el("span", "swatch"), `${s.label} `, el("b", null, v === null ? "–" : s.format(v)));
        return row;
      }),
    );
    tooltip.hidden = false;
    const left = (x / CHART_W) * box.width;
    tooltip.style.left = `${Math.min(Math.max(0, left - 60), Math.max(0, box.width - 130))}px`;
    tooltip.dataset.index = String(i);
  }

  function hideTooltip() {
    pointerX = null;
    tooltip.hidden = true;
    cursor.setAttribute("visibility", "hidden");
  }

  plot.addEventListener("pointermove", (event) => showTooltip(event.clientX));
  plot.addEventListener("pointerdown", (event) => showTooltip(event.clientX));
  plot.addEventListener("pointerleave", hideTooltip);

  return {
    figure,
    /** Draw from the rings of `names` (one node, or the whole cluster) over `windowS`. */
    update(names, windowS, now) {
      let first = Infinity;
      for (const name of names) {
        for (const point of history.get(name) || []) {
          if (point.t >= now - windowS) {
            first = Math.min(first, point.t);
            break;
          }
        }
      }
      const span = Math.min(windowS, Math.max(MIN_SPAN_S, now - (Number.isFinite(first) ? first : now)));
      const from = now - span;
      const width = span / BUCKETS;
      const cluster = names.length !== 1;
      const carry = Math.ceil(CARRY_S / width) - 1;
      const lines = spec.series.map((s) => {
        const perNode = names.map((name) => bucketize(history.get(name), s.key, from, width, s.within));
        if (!perNode.length) return new Array(BUCKETS).fill(null);
        if (!cluster) return perNode[0];
        // Event counts (within "sum") are not carried: that would count them twice.
        return combine(s.within === "sum" ? perNode : perNode.map((v) => carried(v, carry)), s.across);
      });
      let peak = 0;
      for (const line of lines) for (const v of line) if (v !== null) peak = Math.max(peak, v);
      const top = niceMax(peak);
      scale.textContent = spec.series[0].format(top);
      const x = (i) => (((i + 0.5) / BUCKETS) * CHART_W).toFixed(1);
      const y = (v) => (CHART_H - 1 - (v / top) * (CHART_H - 4)).toFixed(1);
      let points = 0;
      // Buckets narrower than a second are mostly empty: only a silence longer than GAP_S
      // (a node away, the console disconnected) breaks a line.
      const gap = Math.max(GAP_S, 2 * width);
      lines.forEach((line, k) => {
        const runs = [];
        let previous = -Infinity;
        line.forEach((v, i) => {
          if (v === null) return;
          if ((i - previous) * width > gap) runs.push([]);
          runs.at(-1).push([i, v]);
          previous = i;
        });
        points = Math.max(points, line.filter((v) => v !== null).length);
        paths[k].line.setAttribute(
          "d",
          runs.map((r) => `M${r.map(([i, v]) => `${x(i)},${y(v)}`).join("L")}`).join(""),
        );
        if (paths[k].area) {
          paths[k].area.setAttribute(
            "d",
            runs
              .filter((r) => r.length > 1)
              .map((r) => `M${x(r[0][0])},${CHART_H}L${r.map(([i, v]) => `${x(i)},${y(v)}`).join("L")}L${x(r.at(-1)[0])},${CHART_H}Z`)
              .join(""),
          );
        }
        const latest = [...line].reverse().find((v) => v !== null);
        values[k].textContent = latest === undefined ? "–" : spec.series[k].format(latest);
      });
      graph.dataset.points = String(points);
      graph.dataset.max = String(peak);
      axis.replaceChildren(
        ...[0, 1, 2, 3].map((k) => {
          const at = clock(from + (span * k) / 3);
          const tick = el("span", "tick", k === 3 ? "now" : span < 600 ? at : at.slice(0, 5));
          tick.dataset.at = String(k);
          return tick;
        }),
      );
      drawn = { from, width, lines };
      if (pointerX !== null) showTooltip(pointerX); // the values under the pointer, redrawn
      return span;
    },
  };
}

const charts = CHARTS.map((spec) => createChart(spec));
ui.charts.replaceChildren(...charts.map((c) => c.figure));

function drawCharts() {
  if (!lastView) return;
  const scope = ui.chartScope.value;
  const names = scope ? [scope] : [...history.keys()];
  const windowS = Number(ui.chartWindow.value) || 3600;
  for (const chart of charts) chart.update(names, windowS, num(lastView.ts));
}

ui.chartScope.addEventListener("change", drawCharts);
ui.chartWindow.addEventListener("change", drawCharts);

// ---------------------------------------------------------------- overview

/** node name -> card elements */
const cards = new Map();
let lastView = null;
let lastViewAt = 0;

function metric(list, label, field) {
  const item = el("div", "metric");
  const value = el("dd", null, "–");
  value.dataset.field = field;
  item.append(el("dt", null, label), value);
  list.append(item);
  return value;
}

function healthRow(list, label) {
  const row = el("div", "health-row");
  const value = el("dd");
  row.append(el("dt", null, label), value);
  list.append(row);
  return value;
}

function setBadge(badge, state, text) {
  badge.dataset.state = state;
  badge.textContent = text;
}

function createNodeCard(name) {
  const root = el("article", "card node-card");
  root.dataset.node = name;
  const head = el("div", "node-head");
  const title = el("h3", "node-name", name);
  title.title = name;
  const state = el("span", "badge");
  state.dataset.field = "accepting";
  head.append(title, state);
  const about = el("p", "node-about muted");
  about.dataset.field = "about";

  const metrics = el("dl", "metrics");
  const fields = {
    connections: metric(metrics, "connections", "connections"),
    joined: metric(metrics, "channels", "joined_channels"),
    inRate: metric(metrics, "in / s", "in_per_s"),
    outRate: metric(metrics, "out / s", "out_per_s"),
    p99: metric(metrics, "p99 fan-out", "p99_ms"),
    cpu: metric(metrics, "CPU", "cpu_percent"),
    memory: metric(metrics, "memory", "memory"),
  };

  const health = el("dl", "health");
  const actorsValue = healthRow(health, "actors");
  const actorsBadge = el("span", "badge");
  actorsBadge.dataset.field = "actors";
  const restarts = el("span", "counts");
  restarts.dataset.field = "restarts";
  const gaveUp = el("span", "reason");
  gaveUp.dataset.field = "gave_up";
  actorsValue.append(actorsBadge, restarts, gaveUp);
  const mailbox = healthRow(health, "mailboxes");
  mailbox.classList.add("counts");
  mailbox.dataset.field = "mailbox";
  const pubsubValue = healthRow(health, "pub/sub");
  const backend = el("span", "backend");
  backend.dataset.field = "backend";
  const pubsubBadge = el("span", "badge");
  pubsubBadge.dataset.field = "pubsub";
  const reason = el("span", "reason");
  reason.dataset.field = "pubsub_reason";
  pubsubValue.append(backend, pubsubBadge, reason);

  const lost = el("div", "lost-info");
  lost.dataset.field = "lost";
  const lostText = el("p", "lost-text");
  const dismiss = el("button", "secondary small", "Dismiss");
  dismiss.type = "button";
  dismiss.dataset.action = "dismiss";
  dismiss.addEventListener("click", () => dismissNode(name, dismiss));
  lost.append(lostText, dismiss);
  lost.hidden = true;

  root.append(head, about, lost, metrics, health);
  return { root, state, about, lost, lostText, metrics, health, fields, actorsBadge, restarts, gaveUp, mailbox, backend, pubsubBadge, reason };
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

function updateLiveCard(card, sample, now) {
  card.root.dataset.state = sample.draining ? "draining" : "up";
  card.lost.hidden = true;
  card.metrics.hidden = card.health.hidden = false;
  if (sample.draining) {
    setBadge(card.state, "warn", "draining");
  } else {
    setBadge(card.state, sample.accepting === false ? "warn" : "ok", sample.accepting === false ? "not accepting" : "accepting");
  }
  const up = duration(now - num(sample.started_at));
  const draining = sample.draining
    ? ` · draining since ${clock(sample.draining.since)}, ${plural(sample.draining.sockets_left, "socket")} left`
    : "";
  const age = now - num(sample.ts);
  const stale = age > STALE_S ? ` · last report ${duration(age)} ago` : "";
  card.root.dataset.stale = String(age > STALE_S);
  card.about.textContent = `v${sample.version ?? "?"} · up ${up} · pid ${sample.pid ?? "?"}${draining}${stale}`;
  card.fields.connections.textContent = formatInt(sample.connections);
  card.fields.joined.textContent = formatInt(sample.joined_channels);
  card.fields.inRate.textContent = formatRate(sample.in_per_s);
  card.fields.outRate.textContent = formatRate(sample.out_per_s);
  card.fields.p99.textContent = formatMs(sample.p99_ms);
  card.fields.cpu.textContent = formatPercent(sample.cpu_percent);
  card.fields.memory.textContent = formatMB(num(sample.memory_bytes) / (1024 * 1024));

  const actors = sample.actors && typeof sample.actors === "object" ? sample.actors : {};
  const healthy = actors.healthy !== false;
  setBadge(card.actorsBadge, healthy ? "ok" : "bad", healthy ? "healthy" : "unhealthy");
  renderCounts(card.restarts, actors.restarts, "alert");
  card.gaveUp.textContent = healthy ? "" : actors.gave_up || "";
  renderCounts(card.mailbox, actors.mailbox, "busy");
  const pubsub = sample.pubsub && typeof sample.pubsub === "object" ? sample.pubsub : {};
  card.backend.textContent = pubsub.backend ?? "?";
  const connected = pubsub.connected !== false;
  setBadge(card.pubsubBadge, connected ? "ok" : "bad", connected ? "connected" : "disconnected");
  card.reason.textContent = connected ? "" : pubsub.reason || "";
  card.root.classList.toggle("unhealthy", !healthy || !connected);
}

function updateLostCard(card, lost, now) {
  card.root.dataset.state = "lost";
  card.root.classList.add("unhealthy");
  setBadge(card.state, "bad", "lost");
  card.about.textContent = `v${lost.version ?? "?"} · boot ${String(lost.node).split(":").at(-1)}`;
  card.lost.hidden = false;
  card.metrics.hidden = card.health.hidden = true;
  const held = lost.held || {};
  card.lostText.textContent =
    `Silent since ${clock(lost.last_seen)}, for ${duration(now - num(lost.last_seen))}. ` +
    `It held ${plural(held.connections, "connection")}, ${plural(held.joined_channels, "joined channel")} ` +
    `in ${plural(held.topics, "topic")}.`;
}

async function dismissNode(name, button) {
  button.disabled = true;
  try {
    await api(`nodes/${encodeURIComponent(name)}/dismiss`, { method: "POST" });
  } catch (err) {
    button.disabled = false;
    button.textContent = `Dismiss (${err.message})`;
  }
}

function renderAlerts(view, now) {
  const alerts = Array.isArray(view.alerts) ? view.alerts : [];
  ui.alertList.replaceChildren(
    ...alerts.map((alert) => {
      const item = el("li", `alert-item ${alert.severity === "critical" ? "critical" : "warning"}`);
      item.dataset.kind = alert.kind;
      item.dataset.node = alert.node;
      const when = el("span", "alert-since", `since ${clock(alert.since)} · ${duration(now - num(alert.since))}`);
      item.append(el("span", "alert-message", alert.message), when);
      return item;
    }),
  );
  ui.allClear.hidden = alerts.length > 0;
  ui.deaf.hidden = view.hearing_others !== false;
}

function renderTopicRows(tbody, topics, onOpen) {
  tbody.replaceChildren(
    ...topics.map((topic) => {
      const row = el("tr");
      row.dataset.topic = topic.topic;
      const name = el("td", "topic");
      const link = el("button", "link", topic.topic);
      link.type = "button";
      link.addEventListener("click", () => onOpen(topic.topic));
      name.append(link);
      const cell = (value, field, format = formatInt) => {
        const td = el("td", "num", format(value));
        td.dataset.field = field;
        return td;
      };
      row.append(
        name,
        cell(topic.subscribers, "subscribers"),
        cell(topic.presences, "presences"),
        cell(topic.messages_per_s, "messages_per_s", formatRate),
      );
      return row;
    }),
  );
}

function renderEvents(view) {
  const events = Array.isArray(view.events) ? [...view.events].reverse() : [];
  ui.events.replaceChildren(
    ...events.map((event) => {
      const item = el("li", "event");
      item.dataset.kind = event.kind;
      item.dataset.at = String(event.at);
      item.append(el("time", "muted", clock(event.at)), el("span", null, event.message));
      return item;
    }),
  );
  ui.eventsEmpty.hidden = events.length > 0;
}

function render(view) {
  if (!view || typeof view !== "object") return;
  lastView = view;
  lastViewAt = Date.now();
  const now = num(view.ts) || Date.now() / 1000;
  const samples = Array.isArray(view.nodes) ? view.nodes : [];
  const lost = Array.isArray(view.lost) ? view.lost : [];
  for (const sample of samples) addSample(sample);

  const seen = new Set();
  for (const sample of samples) {
    seen.add(sample.name);
    if (!cards.has(sample.name)) cards.set(sample.name, createNodeCard(sample.name));
    updateLiveCard(cards.get(sample.name), sample, now);
  }
  for (const gone of lost) {
    seen.add(gone.name);
    if (!cards.has(gone.name)) cards.set(gone.name, createNodeCard(gone.name));
    updateLostCard(cards.get(gone.name), gone, now);
  }
  for (const name of [...cards.keys()]) if (!seen.has(name)) cards.delete(name);
  ui.nodes.replaceChildren(...[...cards.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, c]) => c.root));
  ui.nodesEmpty.hidden = cards.size > 0;

  const scope = ui.chartScope.value;
  const names = [...new Set([...history.keys(), ...seen])].sort();
  const options = [["", "whole cluster"], ...names.map((n) => [n, n])];
  if (ui.chartScope.options.length !== options.length || options.some(([v], i) => ui.chartScope.options[i].value !== v)) {
    ui.chartScope.replaceChildren(...options.map(([value, text]) => {
      const option = el("option", null, text);
      option.value = value;
      return option;
    }));
    ui.chartScope.value = names.includes(scope) ? scope : "";
  }

  const total = (key) => samples.reduce((sum, s) => sum + num(s[key]), 0);
  ui.totalNodes.textContent = lost.length ? `${samples.length} + ${lost.length} lost` : String(samples.length);
  ui.totalConnections.textContent = formatInt(total("connections"));
  ui.totalJoined.textContent = formatInt(total("joined_channels"));
  ui.totalIn.textContent = formatRate(total("in_per_s"));
  ui.totalOut.textContent = formatRate(total("out_per_s"));

  renderAlerts(view, now);
  const topics = Array.isArray(view.topics) ? view.topics : [];
  renderTopicRows(ui.topics, topics, openTopic);
  ui.topicsEmpty.hidden = topics.length > 0;
  const count = num(view.topic_count);
  ui.topicsShown.textContent = topics.length
    ? `· ${topics.length} of ${formatInt(count)}${view.topic_count_exact === false ? "+" : ""}`
    : "";
  renderEvents(view);
  drawCharts();
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

// ---------------------------------------------------------------- tabs

const TABS = ["overview", "connections", "topics", "events"];

function showTab(name) {
  for (const tab of TABS) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
  if (name === "connections") connections.load();
  if (name === "topics") allTopics.load();
}

for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
ui.showAllTopics.addEventListener("click", () => showTab("topics"));

/** A searchable, paged list backed by a console API call. */
function pagedList({ prefix, path, key, render: renderRows }) {
  const form = $(`${prefix}-search`);
  const q = $(`${prefix}-q`);
  const range = $(`${prefix}-range`);
  const prev = $(`${prefix}-prev`);
  const next = $(`${prefix}-next`);
  const state = { offset: 0, total: 0, loading: 0 };
  async function load() {
    const mine = (state.loading += 1);
    const query = new URLSearchParams({ q: q.value.trim(), offset: String(state.offset), limit: String(PAGE) });
    range.textContent = "loading…";
    try {
      const answer = await api(`${path}?${query}`);
      if (mine !== state.loading) return;
      state.total = num(answer.total);
      const rows = answer[key] || [];
      renderRows(rows);
      range.textContent = rows.length
        ? `${formatInt(state.offset + 1)}–${formatInt(state.offset + rows.length)} of ${formatInt(state.total)}${missingNote(answer.missing)}`
        : `none${missingNote(answer.missing)}`;
    } catch (err) {
      if (mine === state.loading) range.textContent = `failed: ${err.message}`;
    }
    prev.disabled = state.offset === 0;
    next.disabled = state.offset + PAGE >= state.total;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.offset = 0;
    load();
  });
  prev.addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    load();
  });
  next.addEventListener("click", () => {
    state.offset += PAGE;
    load();
  });
  return { load, state };
}

// ---------------------------------------------------------------- connections

const connectionsNotice = $("connections-notice");

/** A button that asks "sure?" once before it acts. */
function confirmButton(name, label, confirmLabel, action) {
  const button = el("button", "secondary small", label);
  button.type = "button";
  button.dataset.action = name;
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = confirmLabel;
      button.classList.add("danger");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("danger");
      }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    await action();
  });
  return button;
}

async function disconnect(target, what) {
  connectionsNotice.hidden = false;
  connectionsNotice.dataset.state = "info";
  connectionsNotice.textContent = `Disconnecting ${what}…`;
  try {
    const answer = await api("disconnect", { method: "POST", body: target });
    const closed = answer.closed || [];
    connectionsNotice.dataset.state = closed.length ? "ok" : "warn";
    connectionsNotice.textContent = closed.length
      ? `Disconnected ${what}: ${plural(closed.length, "socket")} closed${missingNote(answer.missing)}. Clients may reconnect if their credentials still allow.`
      : `Nothing to disconnect for ${what}: it is already gone${missingNote(answer.missing)}.`;
  } catch (err) {
    connectionsNotice.dataset.state = "warn";
    connectionsNotice.textContent = `Could not disconnect ${what}: ${err.message}`;
  }
  await connections.load();
}

const connections = pagedList({
  prefix: "connections",
  path: "connections",
  key: "connections",
  render(rows) {
    $("connections-empty").hidden = rows.length > 0;
    $("connections").replaceChildren(
      ...rows.map((c) => {
        const row = el("tr");
        row.dataset.connection = c.id;
        row.dataset.user = c.user ?? "";
        const cell = (text, className, field) => {
          const td = el("td", className, text);
          if (field) td.dataset.field = field;
          return td;
        };
        const channels = cell(c.channels.length ? c.channels.join(", ") : "–", "channels", "channels");
        channels.title = c.channels.join("\n");
        const actions = el("td", "actions");
        actions.append(
          confirmButton("disconnect", "Disconnect", "Sure?", () => disconnect({ connection: c.id }, `socket ${c.id}`)),
        );
        if (c.user !== null && c.user !== undefined) {
          actions.append(
            confirmButton("disconnect-user", "All of user", "Sure? all", () => disconnect({ user: c.user }, `every socket of ${c.user}`)),
          );
        }
        row.append(
          cell(c.user ?? "(anonymous)", c.admin ? "user admin" : "user", "user"),
          cell(c.socket_id ?? "–", "mono", "socket_id"),
          cell(c.node, "mono", "node"),
          cell(c.address, "mono", "address"),
          cell(clock(c.connected_at), null, "connected_at"),
          channels,
          cell(formatInt(c.messages_in), "num", "messages_in"),
          cell(formatInt(c.messages_out), "num", "messages_out"),
          actions,
        );
        return row;
      }),
    );
  },
});

// ---------------------------------------------------------------- topics

const allTopics = pagedList({
  prefix: "topics",
  path: "topics",
  key: "topics",
  render(rows) {
    $("all-topics-empty").hidden = rows.length > 0;
    renderTopicRows($("all-topics"), rows, openTopic);
  },
});

const topicUi = {
  section: $("topic"),
  name: $("topic-name"),
  subscribers: $("topic-subscribers"),
  presences: $("topic-presences"),
  rate: $("topic-rate"),
  byNode: $("topic-by-node"),
  presenceList: $("topic-presence-list"),
  watching: $("topic-watching"),
  traffic: $("topic-traffic"),
  form: $("broadcast"),
  event: $("broadcast-event"),
  payload: $("broadcast-payload"),
  result: $("broadcast-result"),
};
let openedTopic = null; // {name, timer}

function openTopic(name) {
  closeTopic();
  if ($("panel-topics").hidden) showTab("topics");
  openedTopic = { name, timer: setInterval(() => loadTopic(name), TOPIC_POLL_MS) };
  topicUi.section.hidden = false;
  topicUi.section.dataset.topic = name;
  topicUi.name.textContent = name;
  topicUi.result.textContent = "";
  topicUi.traffic.replaceChildren();
  topicUi.presenceList.replaceChildren();
  loadTopic(name);
  topicUi.section.scrollIntoView({ block: "nearest" });
}

function closeTopic() {
  if (openedTopic) clearInterval(openedTopic.timer);
  openedTopic = null;
  topicUi.section.hidden = true;
}

$("topic-close").addEventListener("click", closeTopic);

async function loadTopic(name) {
  let detail;
  try {
    detail = await api(`topics/${encodeURIComponent(name)}`);
  } catch (err) {
    if (openedTopic?.name === name) topicUi.watching.textContent = `(failed: ${err.message})`;
    return;
  }
  if (openedTopic?.name !== name) return;
  topicUi.subscribers.textContent = formatInt(detail.subscribers);
  const presences = Object.entries(detail.presences || {}).sort(([a], [b]) => a.localeCompare(b));
  topicUi.presences.textContent = formatInt(presences.length);
  topicUi.rate.textContent = formatRate(detail.messages_per_s);
  renderCounts(topicUi.byNode, Object.fromEntries(
    Object.entries(detail.subscribers_by_node || {}).map(([id, n]) => [id.replace(/:[^:]*$/, ""), n]),
  ), "none");
  topicUi.presenceList.replaceChildren(
    ...presences.map(([key, { metas }]) => {
      const item = el("li", null, metas.length > 1 ? `${key} (${metas.length})` : key);
      item.dataset.key = key;
      return item;
    }),
  );
  topicUi.watching.textContent = detail.watching_since
    ? `(watched since ${clock(detail.watching_since)}: ${formatInt(detail.seen)} seen${missingNote(detail.missing)})`
    : "(too many topics watched on this node right now)";
  topicUi.traffic.replaceChildren(
    ...[...(detail.recent || [])].reverse().map((message) => {
      const item = el("li");
      item.dataset.event = message.event;
      item.append(el("time", "muted", clock(message.at)), el("b", null, message.event), el("code", null, message.payload));
      return item;
    }),
  );
}

topicUi.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!openedTopic) return;
  let payload;
  try {
    payload = JSON.parse(topicUi.payload.value);
  } catch {
    topicUi.result.textContent = "The payload is not valid JSON.";
    return;
  }
  const topic = openedTopic.name;
  const name = topicUi.event.value.trim();
  try {
    await api("broadcast", { method: "POST", body: { topic, event: name, payload } });
    topicUi.result.textContent = `Broadcast “${name}” to ${topic} at ${clock(Date.now() / 1000)}.`;
    loadTopic(topic);
  } catch (err) {
    topicUi.result.textContent = `Not sent: ${err.message}`;
  }
});

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
        "so its console is off.",
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
  cards.clear();
  history.clear();
  ui.nodes.replaceChildren();
  ui.nodesEmpty.hidden = false;
  ui.topics.replaceChildren();
  ui.alertList.replaceChildren();
  ui.events.replaceChildren();
  closeTopic();
  for (const id of ["totalNodes", "totalConnections", "totalJoined", "totalIn", "totalOut"]) {
    ui[id].textContent = "–";
  }
  lastView = null;
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
      if (!current.historyLoaded) {
        current.historyLoaded = true;
        loadHistory(current);
      }
    })
    .receive("error", (response) => {
      if (!live()) return;
      const reason = response?.reason ?? JSON.stringify(response);
      endSession();
      showLogin(`The node refused the console channel: ${reason}`);
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
