// What the browser scripts in this folder share: headless Debian Chromium driven by
// playwright-core (no downloaded browser), checks that print as they pass, an overall
// deadline, and the PASS / FAIL ending the Python side looks for.
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional PNG path).
// Exit codes: 0 on success, 1 on a failed check, 2 on overrun.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const SCREENSHOT = process.env.SCREENSHOT || "";
export const WAIT = 10_000;

/** Exit 2 if the run has not finished within `overall` ms. */
export function failAfter(overall) {
  const overrun = setTimeout(() => {
    console.error(`FAIL: did not finish within ${overall / 1000} s`);
    process.exit(2);
  }, overall);
  overrun.unref();
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`ok: ${message}`);
}

export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: WAIT,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
}

/**
 * Run `scenarios[name](browser)` in a fresh Chromium; then check that nothing else went
 * wrong on the page (`problems`), and `after()` if given.
 */
export async function runScenario(scenarios, name, problems, after = () => {}) {
  const scenario = scenarios[name];
  if (!scenario) throw new Error(`no scenario ${name}; one of ${Object.keys(scenarios)}`);
  const browser = await launchChromium();
  try {
    await scenario(browser);
    after();
    check(problems.length === 0, `no console errors or page errors${problems.length ? `: ${problems.join("; ")}` : ""}`);
  } finally {
    await browser.close();
  }
}

/** Run `main`; print PASS and exit 0, or print FAIL (with the console/page `problems`) and exit 1. */
export function finish(main, problems) {
  main().then(
    () => {
      console.log("PASS");
      process.exit(0);
    },
    (err) => {
      console.error(`FAIL: ${err.stack || err}`);
      if (problems.length) console.error(`console/page errors: ${problems.join("; ")}`);
      process.exit(1);
    },
  );
}

// -- steps the Python side performs (tests/support/browser.py: run_browser_steps) ----------

let stdinLines = null;
const answers = [];
const waiting = [];

/** Ask the test to do `name` (stop a node, kill Redis...) and wait until it has. */
export async function ask(name) {
  if (!stdinLines) {
    const { createInterface } = await import("node:readline");
    stdinLines = createInterface({ input: process.stdin });
    stdinLines.on("line", (line) => {
      const next = waiting.shift();
      if (next) next(line);
      else answers.push(line);
    });
  }
  console.log(`ASK ${name}`);
  const line = answers.length ? answers.shift() : await new Promise((resolve) => waiting.push(resolve));
  if (line !== `DONE ${name}`) throw new Error(`the test could not ${name}: ${line}`);
  console.log(`ok: the test did ${name}`);
}
