// The demo page recovers what it missed while its connection was down (headless Chromium).
//
//   BASE_URL=http://127.0.0.1:4000 node tests/web/demo_recovery.mjs
//
// Alice's page reaches the server through a WebSocket route the script can cut: her
// connection is dropped and every reconnect refused while bob shouts three times; then the
// route opens again, phoenix.js reconnects and rejoins (the page sends `since`, the ref of
// the last shout it showed), and alice's page shows the three shouts, once each, in order.
import { check, failAfter, finish, launchChromium, WAIT } from "./browser.mjs";

const BASE_URL = process.env.BASE_URL;
const OVERALL = 40_000;

if (!BASE_URL) {
  console.error("BASE_URL is required");
  process.exit(1);
}

failAfter(OVERALL);

const problems = [];

/** A page whose socket goes through `link`: while `link.down`, connections are refused. */
async function openPage(browser, label, link = null) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("console", (msg) => {
    // The cut connection logs nothing the page did wrong; anything else is a problem.
    if (msg.type() === "error" && !msg.text().includes("WebSocket")) problems.push(`${label}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`${label} page error: ${err.message}`));
  if (link) {
    await page.routeWebSocket(/\/socket\/websocket/, (ws) => {
      if (link.down) {
        ws.close({ code: 1011, reason: "link down" });
        return;
      }
      link.current = ws;
      ws.connectToServer();
    });
  }
  await page.goto(`${BASE_URL}/`);
  await page.waitForSelector("body[data-ready='true']");
  return page;
}

async function join(page, name, room) {
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join");
  await page.waitForSelector("#chat:not([hidden])");
  await page.waitForSelector("#status[data-state='connected']");
}

async function shout(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
}

const bodies = (page) =>
  page.evaluate(() => [...document.querySelectorAll("#messages .message .body")].map((b) => b.textContent));

async function shows(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages .message .body")].some((b) => b.textContent === t),
    text,
    { timeout: WAIT },
  );
}

async function main() {
  const browser = await launchChromium();
  try {
    const link = { down: false, current: null };
    const room = `recovery-${Date.now()}`;
    const alice = await openPage(browser, "alice", link);
    const bob = await openPage(browser, "bob");
    await join(alice, "alice", room);
    await join(bob, "bob", room);
    await shout(bob, "before the cut");
    await shows(alice, "before the cut");
    check(true, "alice sees bob's first shout");

    link.down = true;
    await link.current.close({ code: 1011, reason: "link cut" });
    await alice.waitForSelector("#status[data-state='reconnecting']");
    check(true, "alice's page notices the cut and tries to reconnect");
    const missed = ["one while you were away", "two while you were away", "three while you were away"];
    for (const text of missed) {
      await shout(bob, text);
      await shows(bob, text);
    }
    check((await bodies(alice)).length === 1, "alice gets nothing while her link is down");

    link.down = false;
    await alice.waitForSelector("#status[data-state='connected']", { timeout: WAIT });
    await shows(alice, missed[2]);
    await shout(bob, "after the cut");
    await shows(alice, "after the cut");
    const seen = await bodies(alice);
    check(
      JSON.stringify(seen) === JSON.stringify(["before the cut", ...missed, "after the cut"]),
      `alice recovered every shout once, in order: ${JSON.stringify(seen)}`,
    );
    check(problems.length === 0, `no console errors or page errors${problems.length ? `: ${problems.join("; ")}` : ""}`);
  } finally {
    await browser.close();
  }
}

finish(main, problems);
