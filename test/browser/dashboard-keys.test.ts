/**
 * The dashboard in headless Chromium shows a queued build's concurrency key, and marks the one
 * waiting for a slot of the key's limit.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";

describe("dashboard: concurrency keys", () => {
  let api: TestApi;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    api = await openTestApi("dashboard_keys");
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  });
  afterAll(async () => {
    await browser?.close();
    await api?.cleanup();
  });

  it("shows the key on queued rows and marks the build waiting on its limit", async () => {
    const [first, second] = await api.queue.submitMany([
      { strategyId: "deploy-a", concurrencyKey: "prod-db" },
      { strategyId: "deploy-b", concurrencyKey: "prod-db" },
    ]);
    await page.goto(`${await api.url()}/`);
    const admitted = page.locator(`#queued tr[data-build="${first?.build.id}"] .badge.key`);
    const held = page.locator(`#queued tr[data-build="${second?.build.id}"] .badge.key.held`);
    await held.waitFor();
    expect(await admitted.textContent()).toBe("prod-db");
    expect(await admitted.getAttribute("class")).toBe("badge key");
    expect(await held.textContent()).toBe("prod-db: waiting (0/1 running)");
    expect(pageErrors).toEqual([]);
  });
});
