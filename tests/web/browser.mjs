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
