// The demo page at its limits, in headless Chromium (playwright-core, no downloaded browser).
//
//   BASE_URL=http://127.0.0.1:4000 SCENARIO=socket_limit node tests/web/demo_limits.mjs
//
// Needs a node in the dev profile (the page gets its tokens from /dev/token). SCENARIO:
//   socket_limit  SWITCHBOARD_USER_SOCKET_LIMIT=2: a third tab of one user is told why it was
//                 refused and stops retrying; a page whose token is refused does the same
//   connect_rate  a tight SWITCHBOARD_CONNECT_RATE: a refused connect says "too many
//                 attempts", keeps retrying, and connects once the bucket refills
//   slow_down     a tight SWITCHBOARD_PUSH_RATE: a refused shout shows "slow down"
//   busy_room     40 people online: the list scrolls and the message input stays on screen,
//                 at desktop and at phone width
// Optional: CHROMIUM, SCREENSHOT_DIR (PNG files go there). Exits 0 on success, 1 on a failed
// check, 2 on overrun.
import { check, failAfter, finish, runScenario, WAIT } from "./browser.mjs";
import WebSocket from "ws";

const BASE_URL = process.env.BASE_URL;
const SCENARIO = process.env.SCENARIO;
const API_KEY = process.env.API_KEY || "";
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "";
const QUIET_MS = 2500; // phoenix.js retries 8 times within this if nothing stops it

if (!BASE_URL || !SCENARIO) {
  console.error("BASE_URL and SCENARIO are required");
  process.exit(1);
}
failAfter(45_000);

const problems = [];
// Chromium logs every refused WebSocket handshake as a console error; those are the point of
// these scenarios, so they are counted, not failures.
let refusedHandshakes = 0;

async function openPage(browser, label, viewport = { width: 1000, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.sockets = 0;
  page.on("websocket", () => {
    page.sockets += 1;
  });
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if (/WebSocket connection to .* failed/.test(msg.text())) refusedHandshakes += 1;
    else problems.push(`${label} console: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`${label} page error: ${err.message}`));
  await page.goto(`${BASE_URL}/`);
  await page.waitForSelector("body[data-ready='true']");
  return page;
}

async function join(page, name, room) {
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join");
}

async function joined(page) {
  await page.waitForSelector("#chat:not([hidden])");
  await page.waitForSelector("#status[data-state='connected']");
}

async function screenshot(page, name) {
  if (!SCREENSHOT_DIR) return;
  const path = `${SCREENSHOT_DIR}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** The page shows `pattern` as its join error, and opens no new socket for a while. */
async function refusedForGood(page, pattern, what) {
  await page.waitForSelector("#join-error:not([hidden])");
  const text = await page.textContent("#join-error");
  check(pattern.test(text), `${what}: the page says why: “${text}”`);
  check(
    (await page.textContent("#status")) === "not connected" && (await page.isHidden("#chat")),
    `${what}: not connected, not "reconnecting…"`,
  );
  const before = page.sockets;
  await page.waitForTimeout(QUIET_MS);
  check(page.sockets === before, `${what}: no new connection attempt in ${QUIET_MS} ms (${before} in all)`);
}

const scenarios = {
  async socket_limit(browser) {
    const tabs = [];
    for (const n of [1, 2]) {
      const tab = await openPage(browser, `alice-${n}`);
      await join(tab, "alice", "lobby");
      await joined(tab);
      tabs.push(tab);
    }
    check(true, "alice joined in two tabs (the limit is 2)");
    const third = await openPage(browser, "alice-3");
    await join(third, "alice", "lobby");
    await refusedForGood(third, /Too many connections open as “alice”.*Close another tab/, "third tab");
    await screenshot(third, "socket-limit");

    // Closing a tab frees a place (once the cluster-wide count has it): the page joins again.
    await tabs[0].click("#leave");
    await socketsOf("users_socket:alice", 1);
    await join(third, "alice", "lobby");
    await joined(third);
    check(true, "after alice left in another tab, the third tab joins");

    // A page whose token the server refuses (another secret) stops at once too.
    const forged = await openPage(browser, "forged");
    await forged.route(
      (url) => url.pathname === "/dev/token",
      (route) => route.fulfill({ json: { token: "SFMyNTY.forged.token", user: "mallory" } }),
    );
    await join(forged, "mallory", "lobby");
    await refusedForGood(forged, /refused this page's token.*Join again/, "forged token");
  },

  async connect_rate(browser) {
    // SWITCHBOARD_CONNECT_RATE=2,0.5: two connects, then one every two seconds.
    const first = await openPage(browser, "first");
    await join(first, "carol", "lobby");
    await joined(first);
    await first.click("#leave");
    await join(first, "carol", "lobby");
    await joined(first);
    check(true, "two connects go through");
    const late = await openPage(browser, "late");
    await join(late, "dave", "lobby");
    await late.waitForFunction(
      () => /Too many connection attempts/.test(document.querySelector("#status").textContent),
      null,
      { timeout: WAIT },
    );
    check(
      (await late.getAttribute("#status", "data-state")) === "reconnecting",
      `the refused page says so and keeps trying: “${await late.textContent("#status")}”`,
    );
    await joined(late);
    check(true, "once the bucket refills, the page connects by itself");
  },

  async slow_down(browser) {
    // SWITCHBOARD_PUSH_RATE=3,0.2: the fourth shout in a row is refused.
    const page = await openPage(browser, "erin");
    await join(page, "erin", "lobby");
    await joined(page);
    for (const n of [1, 2, 3, 4, 5]) {
      await page.fill("#message", `message ${n}`);
      await page.click("#send");
    }
    await page.waitForFunction(
      () => [...document.querySelectorAll("#messages .notice")].some((li) => /^Slow down/.test(li.textContent)),
      null,
      { timeout: WAIT },
    );
    const notice = await page.evaluate(
      () => [...document.querySelectorAll("#messages .notice")].find((li) => /^Slow down/.test(li.textContent)).textContent,
    );
    check(/“message [45]” was not sent/.test(notice), `a refused shout shows: “${notice}”`);
    const delivered = await page.evaluate(() =>
      [...document.querySelectorAll("#messages .message .body")].map((b) => b.textContent),
    );
    check(delivered.join("|") === "message 1|message 2|message 3", `the first three arrived: ${delivered}`);
    check(/^message [45]$/.test(await page.inputValue("#message")), "the unsent text is back in the input");
    await screenshot(page, "slow-down");
  },

  async busy_room(browser) {
    const people = Array.from({ length: 40 }, (_, i) => `person-${String(i + 1).padStart(2, "0")}`);
    const sockets = await Promise.all(people.map((name) => present(name, "room:busy")));
    try {
      for (const [label, viewport] of [
        ["desktop", { width: 1280, height: 720 }],
        ["phone", { width: 390, height: 844 }],
      ]) {
        const page = await openPage(browser, label, viewport);
        await join(page, `viewer-${label}`, "busy");
        await joined(page);
        await page.waitForFunction(() => document.querySelectorAll("#online li").length === 41, null, {
          timeout: WAIT,
        });
        const layout = await page.evaluate(() => {
          const input = document.querySelector("#message").getBoundingClientRect();
          const list = document.querySelector("#online");
          return {
            inputBottom: input.bottom,
            inputTop: input.top,
            listScrolls: list.scrollHeight > list.clientHeight + 1,
            pageScroll: document.scrollingElement.scrollHeight - window.innerHeight,
            count: document.querySelector("#online-count").textContent,
          };
        });
        check(
          layout.inputTop >= 0 && layout.inputBottom <= viewport.height,
          `${label}: the message input is on screen (${Math.round(layout.inputTop)}-${Math.round(layout.inputBottom)} of ${viewport.height} px)`,
        );
        check(layout.listScrolls, `${label}: the online list scrolls inside the card`);
        check(layout.count === "41", `${label}: the heading counts ${layout.count} online`);
        await screenshot(page, `busy-room-${label}`);
        await page.context().close();
      }
    } finally {
      for (const ws of sockets) ws.close();
    }
  },
};

/** Wait until the per-user count (the `connections` presence topic) shows `n` sockets of `id`. */
async function socketsOf(id, n) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const response = await fetch(`${BASE_URL}/api/presence/connections`, {
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    const { presences } = await response.json();
    const count = presences[id]?.metas.length ?? 0;
    if (count === n) return;
    if (Date.now() > deadline) throw new Error(`${id} still has ${count} sockets, not ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A raw client that joins `topic` as `name` (its presence shows on the page). */
async function present(name, topic) {
  const response = await fetch(`${BASE_URL}/dev/token?user=${encodeURIComponent(name)}`);
  const { token } = await response.json();
  const url = `${BASE_URL.replace(/^http/, "ws")}/socket/websocket?token=${encodeURIComponent(token)}&vsn=2.0.0`;
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("open", () => ws.send(JSON.stringify(["1", "1", topic, "phx_join", {}])));
    ws.on("message", (data) => {
      const [, ref, , event, payload] = JSON.parse(data.toString());
      if (event === "phx_reply" && ref === "1") {
        if (payload.status === "ok") resolve();
        else reject(new Error(`${name} could not join ${topic}`));
      }
    });
  });
  const heartbeat = setInterval(() => ws.send(JSON.stringify([null, "hb", "phoenix", "heartbeat", {}])), 20_000);
  ws.on("close", () => clearInterval(heartbeat));
  return ws;
}

finish(
  () =>
    runScenario(scenarios, SCENARIO, problems, () =>
      console.log(`note: Chromium logged ${refusedHandshakes} refused WebSocket handshake(s)`),
    ),
  problems,
);
