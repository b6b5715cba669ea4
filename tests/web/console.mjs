// The operator's console against a real cluster, in headless Chromium (playwright-core).
//
//   BASE_URL=http://127.0.0.1:4001 ADMIN_TOKEN=... NODES='{"node1": url, ...}' \
//     TOKENS='{"alice": token, ...}' SCENARIO=connections node tests/web/console.mjs
//
// tests/web/test_console.py starts the cluster and answers what a scenario asks of it (`ASK
// freeze_node2`: see browser.mjs). The page is served by BASE_URL (node1), raw Phoenix clients
// connect straight to the node they are meant for. SCENARIO: connections, topics, charts,
// frozen, drained, alerts, layout, single_drain. Optional: CHROMIUM, SCREENSHOT_DIR.
// Any console or page error fails the run. Exits 0 on success, 1 on a failed check, 2 on
// overrun.
import { ask, check, failAfter, finish, runScenario, WAIT } from "./browser.mjs";
import WebSocket from "ws";

const BASE_URL = process.env.BASE_URL;
const ADMIN_TOKEN = process.env.ADMIN_TOKEN;
const NODES = JSON.parse(process.env.NODES || "{}");
const TOKENS = JSON.parse(process.env.TOKENS || "{}");
const SCENARIO = process.env.SCENARIO;
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "";
const LONG = 20_000; // a node going silent, lost, back: heartbeats and timeouts take seconds

if (!BASE_URL || !ADMIN_TOKEN || !SCENARIO) {
  console.error("BASE_URL, ADMIN_TOKEN and SCENARIO are required");
  process.exit(1);
}
failAfter(100_000);

const problems = [];
const clients = [];

// ---------------------------------------------------------------- raw Phoenix clients

/** A raw v2 client of `user` on node `node`, joined to `topics`; keeps what it receives. */
function client(node, user, topics) {
  const token = TOKENS[user];
  if (!token) throw new Error(`no token for ${user}`);
  const url = `${NODES[node].replace(/^http/, "ws")}/socket/websocket?token=${encodeURIComponent(token)}&vsn=2.0.0`;
  const ws = new WebSocket(url);
  const me = { user, node, ws, received: [], ref: 0, joinRefs: {} };
  me.closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  me.send = (topic, event, payload) => {
    me.ref += 1;
    ws.send(JSON.stringify([me.joinRefs[topic] ?? String(me.ref), String(me.ref), topic, event, payload]));
    return String(me.ref);
  };
  me.ready = new Promise((resolve, reject) => {
    const pending = new Set();
    ws.on("error", reject);
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      me.received.push(frame);
      const [, ref, , event, payload] = frame;
      if (event === "phx_reply" && pending.has(ref)) {
        pending.delete(ref);
        if (payload.status !== "ok") reject(new Error(`${user} could not join: ${JSON.stringify(payload)}`));
        else if (pending.size === 0) resolve(me);
      }
    });
    ws.on("open", () => {
      for (const topic of topics) {
        me.joinRefs[topic] = String(me.ref + 1);
        pending.add(me.send(topic, "phx_join", {}));
      }
      if (!topics.length) resolve(me);
    });
  });
  me.heartbeat = setInterval(() => ws.readyState === WebSocket.OPEN && me.send("phoenix", "heartbeat", {}), 15_000);
  ws.on("close", () => clearInterval(me.heartbeat));
  clients.push(me);
  return me.ready;
}

// ---------------------------------------------------------------- page helpers

async function openConsole(browser, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    // The console keeps its socket to a node that exits (drain) and reconnects: Chromium
    // logs those failed attempts; anything else is a problem.
    if (/WebSocket connection to .* failed/.test(msg.text()) && SCENARIO.endsWith("drain")) return;
    problems.push(`console: ${msg.text()} (${msg.location().url})`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  const response = await page.goto(`${BASE_URL}/dashboard`);
  check(response.status() === 200, "GET /dashboard answers 200");
  await page.waitForSelector("body[data-ready='true']");
  await page.fill("#admin-token", ADMIN_TOKEN);
  await page.click("#connect");
  await page.waitForSelector("#status[data-state='connected']");
  await page.waitForSelector("#dashboard:not([hidden])");
  return page;
}

async function screenshot(page, name) {
  if (!SCREENSHOT_DIR) return;
  const path = `${SCREENSHOT_DIR}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

const card = (name) => `.node-card[data-node="${name}"]`;

async function until(page, what, fn, arg, timeout = WAIT) {
  await page.waitForFunction(fn, arg, { timeout });
  check(true, what);
}

async function rows(page, tbody) {
  return page.evaluate(
    (id) =>
      [...document.querySelectorAll(`#${id} tr`)].map((row) => ({
        ...row.dataset,
        cells: Object.fromEntries([...row.querySelectorAll("[data-field]")].map((td) => [td.dataset.field, td.textContent])),
      })),
    tbody,
  );
}

// ---------------------------------------------------------------- scenarios

const scenarios = {
  async connections(browser) {
    const topic = "room:console-conn";
    await Promise.all([
      client("node1", "alice", [topic]),
      client("node1", "alice", [topic]),
      client("node2", "alice", [topic]),
      client("node2", "bob", [topic, "room:console-other"]),
      client("node1", "carol", [topic]),
    ]);
    const [bob] = clients.filter((c) => c.user === "bob");
    bob.send(topic, "ping", { hello: 1 });
    check(true, "five raw clients on two nodes: alice x3, bob, carol");

    const page = await openConsole(browser);
    await page.click("#tab-connections");
    await until(page, "the list shows every socket of both nodes (and the console's own)", () =>
      document.querySelectorAll("#connections tr").length === 6,
    );
    const all = await rows(page, "connections");
    const nodes = new Set(all.map((r) => r.cells.node));
    check(nodes.has("node1") && nodes.has("node2"), `rows come from both nodes: ${[...nodes]}`);
    const bobRow = all.find((r) => r.user === "bob");
    check(
      bobRow.cells.socket_id === "users_socket:bob" &&
        bobRow.cells.address === "127.0.0.1" &&
        bobRow.cells.channels === `${topic}, room:console-other` &&
        Number(bobRow.cells.messages_in) >= 3 &&
        Number(bobRow.cells.messages_out) >= 3 &&
        /^\d\d:\d\d:\d\d$/.test(bobRow.cells.connected_at),
      `bob's row: ${JSON.stringify(bobRow.cells)}`,
    );
    check(
      /^1–6 of 6$/.test(await page.textContent("#connections-range")),
      `the range reads “${await page.textContent("#connections-range")}”`,
    );

    await page.fill("#connections-q", "alice");
    await page.press("#connections-q", "Enter");
    await until(page, "searching for alice lists her three sockets", () => {
      const users = [...document.querySelectorAll("#connections tr")].map((r) => r.dataset.user);
      return users.length === 3 && users.every((u) => u === "alice");
    });
    await screenshot(page, "connections");

    // One socket: two clicks (the second confirms).
    await page.fill("#connections-q", "bob");
    await page.press("#connections-q", "Enter");
    await until(page, "searching for bob lists his socket", () => document.querySelectorAll("#connections tr").length === 1);
    const disconnect = page.locator('#connections tr button[data-action="disconnect"]');
    await disconnect.click();
    check((await disconnect.textContent()) === "Sure?", "the first click asks to confirm");
    await disconnect.click();
    check((await bob.closed) === 1001, "bob's socket is closed with 1001 (he may reconnect)");
    await until(page, "the notice says one socket closed and the list is empty at once", () =>
      /Disconnected socket .*: 1 socket closed/.test(document.querySelector("#connections-notice").textContent) &&
      document.querySelectorAll("#connections tr").length === 0,
    );

    // Every socket of a user, on both nodes.
    await page.fill("#connections-q", "alice");
    await page.press("#connections-q", "Enter");
    await until(page, "alice's three sockets are back in the list", () => document.querySelectorAll("#connections tr").length === 3);
    const allOfUser = page.locator('#connections tr button[data-action="disconnect-user"]').first();
    await allOfUser.click();
    check((await allOfUser.textContent()) === "Sure? all", "the first click asks to confirm");
    await allOfUser.click();
    const alices = clients.filter((c) => c.user === "alice");
    const codes = await Promise.all(alices.map((c) => c.closed));
    check(codes.every((code) => code === 1001), `all three of alice's sockets closed: ${codes}`);
    await until(page, "the notice says three sockets closed", () =>
      /Disconnected every socket of alice: 3 sockets closed/.test(document.querySelector("#connections-notice").textContent),
    );
    const carol = clients.find((c) => c.user === "carol");
    check(carol.ws.readyState === WebSocket.OPEN, "carol, in the same room, is still connected");

    await page.click("#tab-events");
    await until(page, "the disconnects show in the recent events", () =>
      [...document.querySelectorAll("#events li")].some((li) => /disconnected user alice: 3 socket/.test(li.textContent)),
    );
  },

  async topics(browser) {
    const names = Array.from({ length: 14 }, (_, i) => `room:console-t${i + 1}`);
    await Promise.all(names.map((topic, i) => client(i % 2 ? "node2" : "node1", `user${i % 4}`, [topic])));
    const watched = "room:console-t1";
    const [listener] = await Promise.all([client("node2", "dave", [watched]), client("node1", "erin", [watched])]);
    const page = await openConsole(browser);
    await until(page, "the busiest-topics table says 10 of 14", () =>
      document.querySelectorAll("#topics tr").length === 10 && /10 of 14$/.test(document.querySelector("#topics-shown").textContent),
    );
    await page.click("#show-all-topics");
    await until(page, "Show all lists the 14 topics", () => document.querySelectorAll("#all-topics tr").length === 14);
    await page.fill("#topics-q", "console-t1");
    await page.press("#topics-q", "Enter");
    await until(page, "a search for console-t1 finds t1 and t10 to t14", () =>
      document.querySelectorAll("#all-topics tr").length === 6,
    );
    const t1 = (await rows(page, "all-topics")).find((r) => r.topic === watched);
    check(t1.cells.subscribers === "3" && t1.cells.presences === "3", `t1 counts 3 subscribers and presences: ${JSON.stringify(t1.cells)}`);

    await page.click(`#all-topics tr[data-topic="${watched}"] button.link`);
    await until(page, "the topic opens with its three presences", () =>
      document.querySelectorAll("#topic-presence-list li").length === 3,
      null,
    );
    check((await page.textContent("#topic-name")) === watched, "the detail names the topic");
    const byNode = await page.textContent("#topic-by-node");
    check(/node1 2/.test(byNode) && /node2 1/.test(byNode), `subscribers by node: ${byNode}`);

    listener.send(watched, "shout", { body: "seen by the console" });
    await until(page, "the shout shows in the recent traffic, stamped with its sender", () =>
      [...document.querySelectorAll("#topic-traffic li")].some(
        (li) => li.dataset.event === "shout" && /seen by the console/.test(li.textContent) && /"user":"dave"/.test(li.textContent),
      ),
    );

    await page.fill("#broadcast-event", "announcement");
    await page.fill("#broadcast-payload", '{"body": "maintenance at noon"}');
    await page.click("#broadcast-send");
    await until(page, "the console confirms the broadcast", () => /^Broadcast “announcement” to room:console-t1/.test(document.querySelector("#broadcast-result").textContent));
    const deadline = Date.now() + WAIT;
    const got = () => clients.filter((c) => c.received.some((f) => f[2] === watched && f[3] === "announcement" && f[4].body === "maintenance at noon"));
    while (got().length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    check(got().length === 3, `all three members on both nodes got it: ${got().map((c) => c.user)}`);
    await until(page, "the broadcast shows in the recent traffic", () =>
      [...document.querySelectorAll("#topic-traffic li")].some((li) => li.dataset.event === "announcement"),
    );
    await page.fill("#broadcast-payload", "not json");
    await page.click("#broadcast-send");
    check(/not valid JSON/.test(await page.textContent("#broadcast-result")), "a payload that is not JSON is refused on the page");
    await screenshot(page, "topic");
  },

  async charts(browser) {
    await Promise.all([client("node1", "alice", ["room:charts"]), client("node2", "bob", ["room:charts"])]);
    const page = await openConsole(browser);
    const points = (id) =>
      page.evaluate((c) => Number(document.querySelector(`[data-chart="${c}"] svg`).dataset.points), id);
    await until(page, "every chart draws points", () =>
      [...document.querySelectorAll("#charts svg")].every((svg) => Number(svg.dataset.points) >= 3),
    );
    const chartIds = await page.evaluate(() => [...document.querySelectorAll("#charts figure")].map((f) => f.dataset.chart));
    check(
      JSON.stringify(chartIds) === JSON.stringify(["connections", "messages", "latency", "refusals", "actors", "cpu", "memory"]),
      `charts: ${chartIds}`,
    );
    await page.waitForTimeout(4000); // let the page gather a few live points of its own
    const before = await points("connections");

    // A reload starts from the server's history, not from nothing.
    await page.reload();
    await page.waitForSelector("#status[data-state='connected']");
    await page.waitForFunction(() => Number(document.querySelector('[data-chart="connections"] svg').dataset.points) > 0);
    const after = await points("connections");
    check(after >= before - 1, `after a reload the chart still has its history (${after} points, ${before} before)`);

    // Hover: a tooltip with the time and each series' value.
    const plot = page.locator('[data-chart="messages"] .plot');
    const box = await plot.boundingBox();
    await page.mouse.move(box.x + box.width - 3, box.y + box.height / 2);
    await page.waitForSelector('[data-chart="messages"] .tooltip:not([hidden])');
    const tip = await page.textContent('[data-chart="messages"] .tooltip');
    check(/\d\d:\d\d:\d\d/.test(tip) && /in \d/.test(tip) && /out \d/.test(tip), `the tooltip reads “${tip}”`);
    const ticks = await page.$$eval('[data-chart="messages"] .time-axis .tick', (t) => t.map((x) => x.textContent));
    check(ticks.length === 4 && ticks[3] === "now" && /^\d\d:\d\d(:\d\d)?$/.test(ticks[0]), `a time axis: ${ticks}`);

    await page.selectOption("#chart-scope", "node2");
    await until(page, "scoped to node2 the connections chart shows node2's one socket", () =>
      document.querySelector('[data-chart="connections"] .legend-value').textContent === "1",
    );
    await page.selectOption("#chart-scope", "");
    await page.selectOption("#chart-window", "300");
    await until(page, "the whole cluster counts three sockets (two clients, the console)", () =>
      document.querySelector('[data-chart="connections"] .legend-value').textContent === "3",
    );
    await screenshot(page, "charts");
  },

  async frozen(browser) {
    await Promise.all([client("node2", "frank", ["room:frozen"]), client("node2", "grace", ["room:frozen"])]);
    const page = await openConsole(browser);
    await page.waitForSelector(`${card("node2")}[data-state="up"]`);
    await ask("freeze_node2");
    await until(
      page,
      "the frozen node shows as lost",
      (c) => document.querySelector(`${c}[data-state="lost"]`) !== null,
      card("node2"),
      LONG,
    );
    const lostText = await page.textContent(`${card("node2")} .lost-text`);
    check(/Silent since \d\d:\d\d:\d\d, for \d+ s/.test(lostText) && /held 2 connections/.test(lostText), `the lost card: “${lostText}”`);
    const alert = await page.textContent('#alert-list [data-kind="node_lost"]');
    check(/node2 is lost/.test(alert) && /since \d\d:\d\d:\d\d/.test(alert), `an alert: “${alert}”`);
    await until(page, "a second later it reads longer", (c) => /for ([2-9]|\d\d+) s/.test(document.querySelector(`${c} .lost-text`).textContent), card("node2"));
    await screenshot(page, "frozen");

    await ask("thaw_node2");
    await until(page, "thawed, it returns and the alert goes", (c) =>
      document.querySelector(`${c}[data-state="up"]`) !== null && !document.querySelector('#alert-list [data-kind="node_lost"]'),
      card("node2"),
      LONG,
    );

    await ask("freeze_node2");
    await page.waitForSelector(`${card("node2")}[data-state="lost"]`, { timeout: LONG });
    await page.click(`${card("node2")} button[data-action="dismiss"]`);
    await until(page, "dismissed, the lost node leaves the page", (c) => !document.querySelector(c) && !document.querySelector('#alert-list [data-kind="node_lost"]'), card("node2"));
    await ask("thaw_node2");
    await until(page, "when it speaks again it is back", (c) => document.querySelector(`${c}[data-state="up"]`) !== null, card("node2"), LONG);
    await page.click("#tab-events");
    const events = await page.$$eval("#events li", (li) => li.map((x) => x.textContent));
    check(
      events.some((e) => /node2 lost/.test(e)) && events.some((e) => /dismissed/.test(e)) && events.some((e) => /node2 came back/.test(e)),
      "the events tell the story: lost, came back, dismissed",
    );
  },

  async drained(browser) {
    await Promise.all([client("node2", "henry", ["room:drain"]), client("node2", "iris", ["room:drain"])]);
    const page = await openConsole(browser);
    await page.waitForSelector(`${card("node2")}[data-state="up"]`);
    const drainedAt = Date.now() / 1000;
    await ask("drain_node2");
    await until(page, "the draining node shows as draining, with an alert", (c) =>
      document.querySelector(`${c}[data-state="draining"]`) !== null &&
      /node2 is draining/.test(document.querySelector('#alert-list [data-kind="draining"]')?.textContent ?? ""),
      card("node2"),
      LONG,
    );
    check(/draining since \d\d:\d\d:\d\d/.test(await page.textContent(`${card("node2")} .node-about`)), "its card says since when");
    await screenshot(page, "draining");
    await until(page, "once drained it leaves, without being taken for lost", (c) =>
      !document.querySelector(c) &&
      !document.querySelector('#alert-list [data-node="node2"]'),
      card("node2"),
      LONG,
    );
    await page.click("#tab-events");
    const events = await page.$$eval(
      "#events li",
      (li, since) => li.filter((x) => Number(x.dataset.at) >= since).map((x) => x.textContent),
      drainedAt - 1,
    );
    check(events.some((e) => /node2 left the cluster after draining/.test(e)), "the events say it left after draining");
    check(!events.some((e) => /node2 lost/.test(e)), `and never that it was lost: ${events}`);
  },

  async single_drain(browser) {
    await Promise.all([client("node1", "jack", ["room:single"]), client("node1", "kate", ["room:single"])]);
    const page = await openConsole(browser);
    const name = await page.getAttribute(".node-card", "data-node");
    await ask("drain_node1");
    await until(page, "the only node shows itself draining to the console", () =>
      document.querySelector('.node-card[data-state="draining"]') !== null &&
      document.querySelector('#alert-list [data-kind="draining"]') !== null,
      null,
      LONG,
    );
    const about = await page.textContent(".node-card .node-about");
    check(/draining since \d\d:\d\d:\d\d, \d+ sockets? left/.test(about), `${name}: “${about}”`);
    await screenshot(page, "single-drain");
    await until(page, "until it is gone: the console loses its connection", () =>
      document.querySelector("#status").dataset.state === "reconnecting", null, LONG);
  },

  async alerts(browser) {
    const page = await openConsole(browser);
    await ask("kill_redis");
    await until(page, "Redis down: an alert for each node, and the node says it is deaf", () =>
      document.querySelectorAll('#alert-list [data-kind="pubsub_down"]').length >= 1 &&
      !document.querySelector("#deaf").hidden,
      null,
      LONG,
    );
    const alert = await page.textContent('#alert-list [data-kind="pubsub_down"]');
    check(/pub\/sub \(redis\) is down/.test(alert) && /since \d\d:\d\d:\d\d/.test(alert), `“${alert}”`);
    await screenshot(page, "redis-down");
    await ask("restart_redis");
    await until(page, "Redis back: the alert goes", () => !document.querySelector('#alert-list [data-kind="pubsub_down"]'), null, LONG);

    for (let i = 0; i < 3; i += 1) await ask("crash_cache_actor");
    await until(page, "three cache restarts within a minute: a restart-loop alert", () =>
      /cache actor restarted 3 times in the last minute/.test(document.querySelector('#alert-list [data-kind="restart_loop"]')?.textContent ?? ""),
      null,
      LONG,
    );
    check(
      (await page.textContent(`${card("node1")} [data-field="restarts"] [data-name="cache"] b`)) === "3",
      "the node card counts the three restarts",
    );
  },

  async layout(browser) {
    await client("node1", "a-user-with-a-rather-long-name", ["room:layout-with-a-long-topic-name-for-the-table"]);
    const wide = await openConsole(browser, { width: 1440, height: 900 });
    await wide.waitForSelector(`${card("node2")}[data-state="up"]`);
    await wide.waitForFunction(() => document.querySelector(".node-card [data-field='cpu_percent']").textContent !== "–");
    const cut = await wide.evaluate(() =>
      [...document.querySelectorAll(".node-card dt, .node-card dd, .node-card .node-name, .node-card .badge, #charts figcaption span")]
        .filter((e) => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > e.closest(".card").getBoundingClientRect().right + 1)
        .map((e) => e.textContent),
    );
    check(cut.length === 0, `at 1440 px no label of a node card or chart is cut${cut.length ? `: ${cut}` : ""}`);
    await screenshot(wide, "wide-1440");

    const phone = await openConsole(browser, { width: 390, height: 844 });
    await phone.waitForSelector(card("node1"));
    const overflow = async () => phone.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
    const widest = () =>
      phone.evaluate(() =>
        [...document.querySelectorAll("body *")]
          .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
          .slice(0, 5)
          .map((e) => `${e.tagName}#${e.id}.${e.className}`),
      );
    check((await overflow()) <= 1, `at phone width the overview does not scroll sideways (${await overflow()} px)`);
    await screenshot(phone, "phone-overview");
    await phone.click("#tab-connections");
    await phone.waitForSelector("#connections tr");
    check((await overflow()) <= 1, `the connections table scrolls inside its card, not the page ${await widest()}`);
    const button = await phone.locator("#connections tr button").first().boundingBox();
    check(button && button.width >= 30 && button.height >= 20, "its buttons are big enough to tap");
    await screenshot(phone, "phone-connections");
  },
};

async function main() {
  try {
    await runScenario(scenarios, SCENARIO, problems);
  } finally {
    for (const c of clients) c.ws.terminate();
  }
}

finish(main, problems);
