/**
 * The dashboard in a real browser (headless Chromium): it shows the queue and the workers, a build
 * submitted from its form appears as running with its progress moving live (the /v1/events stream),
 * its Stop button stops the build on the worker, and the finished build's Retry button runs it again.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Worker } from "../../src/worker/worker.js";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";
import { eventually } from "../helpers/queue.js";

describe("dashboard in Chromium", () => {
  let api: TestApi;
  let worker: Worker;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    api = await openTestApi("dashboard", { queue: { progressIntervalMs: 50 } });
    worker = new Worker(api.queue, {
      id: "dashboard-worker",
      capacity: 1,
      // Reports an iteration every 100 ms until it is stopped.
      handler: async (ctx) => {
        for (let i = 1; !ctx.signal.aborted; i++) {
          await ctx.progress({ phase: "training", iteration: i, maxIterations: 1000 }).catch(() => undefined);
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error("stopped");
      },
    });
    await worker.start();
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  });
  afterAll(async () => {
    await browser?.close();
    await worker?.stop();
    await api?.cleanup();
  });

  it("submits a build, shows its live progress, stops it, and retries it", async () => {
    await page.goto(`${await api.url()}/`);
    await page.locator("#stream", { hasText: "live" }).waitFor();
    // The mode comes from /v1/queue, fetched beside the stream: wait for it rather than read it once.
    await page.locator("#mode", { hasText: /^postgres$/ }).waitFor();
    await page.locator("#workers", { hasText: "dashboard-worker" }).waitFor();

    await page.fill("#strategy", "from-the-browser");
    await page.click("#submit-form button[type=submit]");
    const row = page.locator("#active tr", { hasText: "from-the-browser" });
    await row.waitFor();
    const buildId = await row.getAttribute("data-build");
    if (!buildId) throw new Error("the running row names no build");

    // Progress moves without a reload: two different iterations are shown, one after the other.
    const iteration = async () => Number(/iteration (\d+)/.exec((await row.textContent()) ?? "")?.[1] ?? 0);
    const first = await eventually(async () => (await iteration()) >= 2 && (await iteration()));
    await eventually(async () => (await iteration()) > first);

    await row.locator("button[data-stop]").click();
    await page.locator("#active tr", { hasText: "from-the-browser" }).waitFor({ state: "detached" });
    await page.locator("#log", { hasText: `${buildId} stopped` }).waitFor();
    expect(await api.queue.get(buildId)).toMatchObject({ status: "stopped" });

    // Finished builds are listed with who stopped them; Retry runs the build again.
    const finished = page.locator("#finished tr", { hasText: buildId });
    await finished.filter({ hasText: "stopped from the dashboard" }).waitFor();
    await finished.locator("button[data-retry]").click();
    await page.locator("#active tr", { hasText: "from-the-browser" }).waitFor();
    await finished.waitFor({ state: "detached" });
    await eventually(async () => (await api.queue.get(buildId)).status === "running");
    expect((await api.queue.get(buildId)).retryCount).toBe(0);
    await api.queue.stop(buildId, { actor: "test" });
    await eventually(async () => (await api.queue.get(buildId)).status === "stopped");
    expect(pageErrors).toEqual([]);
  });
});
