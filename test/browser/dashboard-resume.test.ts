/**
 * The dashboard's event stream in a real browser (headless Chromium), when the server refuses its
 * resume as too far back (410 resume_too_old): it reconnects without Last-Event-ID, takes the
 * snapshot and is live again. The first stream is a stand-in (Playwright's routing) that gives one
 * old id and ends, as a dropped connection would; every later request goes to the real server.
 */
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";

describe("dashboard stream resume in Chromium", () => {
  let api: TestApi;
  let browser: Browser;

  beforeAll(async () => {
    api = await openTestApi("dashboard_resume", { maxResumeEvents: 5 });
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.cleanup();
  });

  it("answers a 410 by starting over with a snapshot", async () => {
    for (let i = 0; i < 10; i++) await api.queue.submit({ strategyId: `resume-${i}` });
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (err) => pageErrors.push(err.message));
    const asked: { lastEventId: string | null; status: number }[] = [];
    let first = true;
    await page.route("**/v1/events", async (route) => {
      if (first) {
        first = false;
        asked.push({ lastEventId: route.request().headers()["last-event-id"] ?? null, status: 200 });
        await route.fulfill({
          status: 200,
          contentType: "text/event-stream",
          body: ": stand-in\n\nid: 1\n\n",
        });
        return;
      }
      await route.continue();
    });
    page.on("response", (res) => {
      if (new URL(res.url()).pathname !== "/v1/events" || asked.length === 0) return;
      asked.push({ lastEventId: res.request().headers()["last-event-id"] ?? null, status: res.status() });
    });
    await page.goto(`${await api.url()}/`);
    await expect.poll(() => asked.some((a) => a.status === 410), { timeout: 15_000 }).toBe(true);
    await page.locator("#stream", { hasText: "live" }).waitFor();
    const afterRefusal = asked.slice(asked.findIndex((a) => a.status === 410));
    expect(afterRefusal[0]).toEqual({ lastEventId: "1", status: 410 });
    expect(afterRefusal[1]).toEqual({ lastEventId: null, status: 200 });
    expect(pageErrors).toEqual([]);
    await page.close();
  }, 60_000);
});
