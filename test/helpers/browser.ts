/**
 * A real headless Chromium (Debian's package) driven by playwright-core, for the dashboard test.
 */
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export function launchBrowser(): Promise<Browser> {
  // --no-sandbox: the tests run as root (CI), where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: ["--no-sandbox"], headless: true });
}
