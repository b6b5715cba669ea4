// Drive the demo page in headless Chromium (playwright-core, no downloaded browser).
//
//   BASE_URL=http://127.0.0.1:4000 node tests/web/demo_page.mjs
//
// Needs a node in the dev profile (the page gets its token from /dev/token). Environment:
// BASE_URL (required), CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional PNG path).
// Every page is served with a strict `default-src 'self'` CSP, and any console error or
// uncaught exception fails the run. Exits 0 on success, 1 on a failed check, 2 on overrun.
import { check, failAfter, finish, launchChromium, SCREENSHOT, WAIT } from "./browser.mjs";

const BASE_URL = process.env.BASE_URL;
const OVERALL = 35_000;
const XSS = "look: <img src=x onerror=window.__xss=1> & <b>bold</b>";
const CSP = "default-src 'self'";

if (!BASE_URL) {
  console.error("BASE_URL is required");
  process.exit(1);
}

failAfter(OVERALL);

const problems = [];

async function openPage(browser, label, sink = problems) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  // A fulfilled (rewritten) document has no known IP address space, so Chromium's
  // local-network-access checks would block its socket to 127.0.0.1; a document served
  // straight from the loopback server needs no such grant.
  await context.grantPermissions(["local-network-access"], { origin: BASE_URL });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on("console", (msg) => {
    if (msg.type() === "error") sink.push(`${label} console: ${msg.text()}`);
  });
  page.on("pageerror", (err) => sink.push(`${label} page error: ${err.message}`));
  // Serve the page under the strict CSP the project intends to add.
  await page.route(`${BASE_URL}/`, async (route) => {
    const response = await route.fetch();
    await route.fulfill({
      response,
      headers: { ...response.headers(), "content-security-policy": CSP },
    });
  });
  await page.goto(`${BASE_URL}/`);
  await page.waitForSelector("body[data-ready='true']");
  return page;
}

async function cspIsEnforced(browser) {
  const page = await openPage(browser, "probe", []);
  const ran = await page.evaluate(() => {
    const script = document.createElement("script");
    script.textContent = "window.__inline = 1";
    document.head.append(script);
    return window.__inline === 1;
  });
  await page.context().close();
  return !ran;
}

async function joinRoom(page, name, room) {
  await page.fill("#name", name);
  await page.fill("#room", room);
  await page.click("#join");
}

async function joined(page, room) {
  await page.waitForSelector("#chat:not([hidden])");
  await page.waitForSelector("#status[data-state='connected']");
  check((await page.textContent("#room-name")) === room, `joined room ${room}`);
}

async function sendShout(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
}

async function waitForShout(page, user, body) {
  await page.waitForFunction(
    ([u, b]) =>
      [...document.querySelectorAll("#messages .message")].some(
        (li) => li.querySelector(".user")?.textContent === u && li.querySelector(".body")?.textContent === b,
      ),
    [user, body],
    { timeout: WAIT },
  );
}

async function onlineIs(page, names) {
  await page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll("#online li")].map((li) => li.textContent);
      return JSON.stringify(got) === JSON.stringify(want);
    },
    names,
    { timeout: WAIT },
  );
}

async function main() {
  const browser = await launchChromium();
  try {
    check(await cspIsEnforced(browser), `the test pages run under "${CSP}"`);
    const [alice, bob] = await Promise.all([openPage(browser, "alice"), openPage(browser, "bob")]);
    check(
      (await alice.textContent("#status")) === "not connected" &&
        (await alice.inputValue("#room")) === "lobby",
      "page loads under a strict CSP, not connected, room defaults to lobby",
    );

    await joinRoom(alice, "alice", "lobby");
    await joinRoom(bob, "bob", "lobby");
    await Promise.all([joined(alice, "lobby"), joined(bob, "lobby")]);
    check((await bob.textContent("#status")) === "connected", "status shows connected");
    await Promise.all([onlineIs(alice, ["alice", "bob"]), onlineIs(bob, ["alice", "bob"])]);
    check(true, "presence: both pages list alice and bob online");

    await sendShout(alice, XSS);
    await Promise.all([waitForShout(bob, "alice", XSS), waitForShout(alice, "alice", XSS)]);
    check(true, "bob and alice both see alice's shout as literal text");
    for (const [label, page] of [["alice", alice], ["bob", bob]]) {
      check(
        (await page.evaluate(() => window.__xss)) === undefined,
        `${label}: the onerror handler never ran`,
      );
      check(
        (await page.locator("#messages img, #messages b").count()) === 0,
        `${label}: no <img> or <b> element in the message list`,
      );
      check(
        (await page.textContent("#messages")).includes("<img src=x onerror=window.__xss=1>"),
        `${label}: message list text contains the markup verbatim`,
      );
    }

    await sendShout(bob, "hi alice, that came through as plain text, nice");
    await waitForShout(alice, "bob", "hi alice, that came through as plain text, nice");
    check(true, "alice sees bob's reply");
    if (SCREENSHOT) {
      await bob.screenshot({ path: SCREENSHOT });
      console.log(`screenshot: ${SCREENSHOT}`);
    }

    await alice.click("#leave");
    await alice.waitForSelector("#join-form:not([hidden])");
    check((await alice.textContent("#status")) === "not connected", "leave disconnects");
    await onlineIs(bob, ["bob"]);
    check(true, "presence: bob's list drops alice after she leaves");
    await joinRoom(alice, "alice", "forbidden");
    await alice.waitForSelector("#join-error:not([hidden])");
    const error = await alice.textContent("#join-error");
    check(error.includes("forbidden") && error.includes("unauthorized"), `join error shown: ${error}`);
    check(await alice.isHidden("#chat"), "chat stays hidden after a refused join");

    check(problems.length === 0, `no console errors or page errors${problems.length ? `: ${problems.join("; ")}` : ""}`);
  } finally {
    await browser.close();
  }
}

finish(main, problems);
