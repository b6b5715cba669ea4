// Drive the live dashboard in headless Chromium (playwright-core, no downloaded browser).
//
//   BASE_URL=http://127.0.0.1:4000 ADMIN_TOKEN=... NODE_NAME=... USER_TOKENS='["t1", ...]' \
//     node tests/web/dashboard.mjs
//
// Needs a node in the test profile with SWITCHBOARD_ADMIN_TOKEN set (tests/web/test_dashboard.py
// starts one). USER_TOKENS are socket tokens for distinct users: each becomes a raw `ws` client
// that joins room:busy and shouts. Optional: CHROMIUM (default /usr/bin/chromium), SCREENSHOT
// (PNG path). Any console error or page error fails the run, except the one network error
// Chromium logs for the deliberately wrong admin token (HTTP 401). Exits 0 on success, 1 on a
// failed check, 2 on overrun.
import { check, failAfter, finish, launchChromium, SCREENSHOT, WAIT } from "./browser.mjs";
import WebSocket from "ws";

const BASE_URL = process.env.BASE_URL;
const ADMIN_TOKEN = process.env.ADMIN_TOKEN;
const NODE_NAME = process.env.NODE_NAME;
const USER_TOKENS = JSON.parse(process.env.USER_TOKENS || "[]");
const OVERALL = 38_000;
const ROOM = "room:busy";
const XSS_ROOM = "room:<img src=x onerror=window.__xss=1>";
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'";

if (!BASE_URL || !ADMIN_TOKEN || !NODE_NAME || USER_TOKENS.length < 2) {
  console.error("BASE_URL, ADMIN_TOKEN, NODE_NAME and USER_TOKENS (2 or more) are required");
  process.exit(1);
}
const N = USER_TOKENS.length;

failAfter(OVERALL);

const problems = [];
// Chromium reports a fetch answered 401 as a console error ("Failed to load resource"); that
// is expected exactly while the wrong admin token is being tried, and nowhere else.
let expect401 = false;
let seen401 = 0;

function isExpected401(msg) {
  return (
    expect401 &&
    msg.text().includes("status of 401") &&
    msg.location().url.endsWith("/api/admin/socket-token")
  );
}

// ---------------------------------------------------------------- raw Phoenix clients

const wsBase = `${BASE_URL.replace(/^http/, "ws")}/socket/websocket`;

/** A raw v2 JSON client: join `topics`, then shout to the first one every `every` ms. */
function startClient(token, user, topics, every) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsBase}?token=${encodeURIComponent(token)}&vsn=2.0.0`);
    let ref = 0;
    let timer = null;
    const pending = new Map();
    const send = (joinRef, topic, event, payload) => {
      ref += 1;
      ws.send(JSON.stringify([joinRef, String(ref), topic, event, payload]));
      return String(ref);
    };
    ws.on("error", reject);
    ws.on("message", (data) => {
      const [, msgRef, , event, payload] = JSON.parse(data.toString());
      if (event === "phx_reply" && pending.has(msgRef)) {
        const topic = pending.get(msgRef);
        pending.delete(msgRef);
        if (payload.status !== "ok") reject(new Error(`${user} could not join ${topic}`));
        else if (pending.size === 0) {
          timer = setInterval(() => send(joinRefs[0], topics[0], "shout", { body: "busy", user }), every);
          resolve({ close: () => closeClient(ws, timer) });
        }
      }
    });
    const joinRefs = [];
    ws.on("open", () => {
      for (const topic of topics) {
        const joinRef = String(ref + 1);
        joinRefs.push(joinRef);
        pending.set(send(joinRef, topic, "phx_join", {}), topic);
      }
    });
  });
}

function closeClient(ws, timer) {
  clearInterval(timer);
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once("close", resolve);
    ws.close();
  });
}

// ---------------------------------------------------------------- page helpers

// Cards are named by node name: the node id without its boot id (a restart keeps the card).
const NAME = NODE_NAME.replace(/:[^:]*$/, "");
const card = `.node-card[data-node="${NAME.replace(/["\\]/g, "\\$&")}"]`;

/** Wait until the card's number `field` is equal to (op "eq") or above (op "gt") `target`. */
async function fieldIs(page, field, op, target, what) {
  await page.waitForFunction(
    ([selector, o, t]) => {
      const text = document.querySelector(selector)?.textContent;
      if (text === undefined) return false;
      const value = Number(text.replace(/,/g, ""));
      return o === "eq" ? value === t : value > t;
    },
    [`${card} [data-field="${field}"]`, op, target],
    { timeout: WAIT },
  );
  const text = await page.textContent(`${card} [data-field="${field}"]`);
  check(true, `${what} (${field} shows ${text})`);
  return text;
}

async function topicRow(page, topic) {
  return page.evaluate((t) => {
    const row = [...document.querySelectorAll("#topics tr")].find((r) => r.dataset.topic === t);
    if (!row) return null;
    return {
      subscribers: row.querySelector('[data-field="subscribers"]').textContent,
      presences: row.querySelector('[data-field="presences"]').textContent,
    };
  }, topic);
}

async function main() {
  const browser = await launchChromium();
  const clients = [];
  try {
    // A fresh context is a fresh profile: empty sessionStorage, no saved passwords.
    const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    page.on("console", (msg) => {
      if (msg.type() !== "error") return;
      if (isExpected401(msg)) seen401 += 1;
      else problems.push(`console: ${msg.text()} (${msg.location().url})`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));

    // Served straight from the loopback node: no route rewriting, no permission grants.
    const response = await page.goto(`${BASE_URL}/dashboard`);
    check(response.status() === 200, "GET /dashboard answers 200");
    check(
      (response.headers()["content-security-policy"] || "").startsWith(CSP),
      "the page is served under the node's strict CSP",
    );
    await page.waitForSelector("body[data-ready='true']");
    check(
      (await page.textContent("#status")) === "not connected" &&
        (await page.isVisible("#login")) &&
        (await page.isHidden("#dashboard")),
      "page loads not connected, asking for the admin token",
    );

    // A wrong admin token: an error, no connection, nothing stored.
    expect401 = true;
    await page.fill("#admin-token", "definitely-not-the-admin-token");
    await page.click("#connect");
    await page.waitForSelector("#login-error:not([hidden])");
    expect401 = false;
    check((await page.textContent("#login-error")) === "wrong admin token", "wrong token: 'wrong admin token' shown");
    check((await page.textContent("#status")) === "not connected", "wrong token: still not connected");
    check(
      (await page.evaluate(() => sessionStorage.length)) === 0,
      "wrong token: nothing kept in sessionStorage",
    );
    check(await page.isHidden("#dashboard"), "wrong token: no dashboard shown");

    // The right token.
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.click("#connect");
    await page.waitForSelector("#status[data-state='connected']");
    await page.waitForSelector(`${card}`);
    check((await page.locator(".node-card").count()) === 1, "connected: exactly one node card");
    check((await page.textContent(`${card} .node-name`)) === NAME, `the card names node ${NAME}`);
    check(await page.isHidden("#login"), "the token form is gone once connected");
    // The join reply carries the sample taken before the dashboard's socket existed (0
    // connections); the next broadcast counts the dashboard's own socket.
    await fieldIs(page, "connections", "eq", 1, "idle node: the dashboard's own socket is its one connection");
    check(
      (await page.textContent(`${card} [data-field="accepting"]`)) === "accepting" &&
        (await page.textContent(`${card} [data-field="actors"]`)) === "healthy" &&
        (await page.textContent(`${card} [data-field="pubsub"]`)) === "connected" &&
        (await page.textContent(`${card} [data-field="backend"]`)) === "memory",
      "card: accepting, actors healthy, pub/sub memory backend connected",
    );

    // A reload keeps the session: the token comes back from sessionStorage.
    await page.reload();
    await page.waitForSelector("#status[data-state='connected']");
    await page.waitForSelector(card);
    check(await page.isHidden("#login"), "after a reload the page reconnects without asking again");

    // Load: N clients in room:busy, shouting; one also joins a topic whose name is markup.
    const started = await Promise.all(
      USER_TOKENS.map((token, i) =>
        startClient(token, `user-${i + 1}`, i === 0 ? [ROOM, XSS_ROOM] : [ROOM], 150),
      ),
    );
    clients.push(...started);
    check(true, `${N} raw clients joined ${ROOM} and shout`);

    await fieldIs(page, "connections", "eq", N + 1, `connections rise to ${N} clients + the dashboard`);
    await page.waitForFunction(
      ([topic, n]) => {
        const row = [...document.querySelectorAll("#topics tr")].find((r) => r.dataset.topic === topic);
        return (
          row?.querySelector('[data-field="subscribers"]').textContent === String(n) &&
          row?.querySelector('[data-field="presences"]').textContent === String(n)
        );
      },
      [ROOM, N],
      { timeout: WAIT },
    );
    const busy = await topicRow(page, ROOM);
    check(true, `${ROOM} in busiest topics: ${busy.subscribers} subscribers, ${busy.presences} presences`);
    check(
      (await page.evaluate(() => document.querySelector("#topics tr")?.dataset.topic)) === ROOM,
      `${ROOM} tops the busiest-topics table`,
    );
    // Each client shouts about 6 times a second: well over N messages/s in, and every shout
    // goes out to all N members.
    await fieldIs(page, "in_per_s", "gt", N, `messages in per second rise above ${N}`);
    await fieldIs(page, "out_per_s", "gt", N * N, `messages out per second rise above ${N * N}`);

    const xss = await topicRow(page, XSS_ROOM);
    check(xss !== null && xss.subscribers === "1", "a topic named with markup is listed");
    check(
      (await page.locator("#topics img").count()) === 0 &&
        (await page.evaluate(() => window.__xss)) === undefined &&
        (await page.evaluate(
          (t) => [...document.querySelectorAll("#topics .topic")].some((td) => td.textContent === t),
          XSS_ROOM,
        )),
      "the markup topic shows as literal text, no element, no handler ran",
    );

    await page.selectOption("#chart-scope", NAME);
    await page.waitForFunction(
      (peak) => {
        const chart = document.querySelector('#charts [data-chart="connections"] svg');
        const path = chart?.querySelector("path.line")?.getAttribute("d") || "";
        return Number(chart?.dataset.points) >= 3 && Number(chart?.dataset.max) >= peak && path.includes("L");
      },
      N + 1,
      { timeout: WAIT },
    );
    const points = await page.getAttribute('#charts [data-chart="connections"] svg', "data-points");
    check(true, `the node's connections chart has ${points} points and a line up to ${N + 1}`);
    await page.selectOption("#chart-scope", "");
    await page.waitForFunction(
      () => {
        const chart = document.querySelector('#charts [data-chart="messages"] svg');
        return Number(chart?.dataset.max) > 0 && chart.querySelectorAll("path.line[d*='L']").length === 2;
      },
      null,
      { timeout: WAIT },
    );
    check(true, "the cluster messages/s chart draws in and out lines");
    check(
      (await page.textContent("#total-connections")) === String(N + 1) &&
        (await page.textContent("#total-nodes")) === "1",
      "cluster totals: 1 node, connections match the card",
    );

    // An actor restart is highlighted on the card.
    const fault = await fetch(`${BASE_URL}/test/actors/cache/fault`, { method: "POST" });
    check(fault.status === 200, "injected a fault into the cache actor");
    await page.waitForSelector(`${card} [data-field="restarts"] .count.alert[data-name="cache"]`);
    check(
      (await page.textContent(`${card} [data-field="restarts"] [data-name="cache"] b`)) === "1",
      "the cache actor's restart shows as 1, highlighted",
    );

    if (SCREENSHOT) {
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      console.log(`screenshot: ${SCREENSHOT}`);
    }

    // The clients leave: the numbers fall back.
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await fieldIs(page, "connections", "eq", 1, "connections fall back to the dashboard alone");
    await page.waitForFunction(
      (topic) => ![...document.querySelectorAll("#topics tr")].some((r) => r.dataset.topic === topic),
      ROOM,
      { timeout: WAIT },
    );
    check(true, `${ROOM} leaves the busiest-topics table`);

    await page.click("#sign-out");
    await page.waitForSelector("#login:not([hidden])");
    check(
      (await page.textContent("#status")) === "not connected" &&
        (await page.evaluate(() => sessionStorage.length)) === 0 &&
        (await page.isHidden("#dashboard")),
      "sign out: disconnected, token forgotten, dashboard hidden",
    );

    console.log(`note: Chromium logged ${seen401} expected 401 network error(s) for the wrong token`);
    check(problems.length === 0, `no console errors or page errors${problems.length ? `: ${problems.join("; ")}` : ""}`);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await browser.close();
  }
}

finish(main, problems);
