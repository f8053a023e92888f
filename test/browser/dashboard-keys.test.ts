/**
 * The dashboard in headless Chromium shows a queued build's concurrency key, and marks the one
 * waiting for a slot of the key's limit; its limits table lists the keys and sets a limit.
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

  it("lists the keys' limits and sets one: raising it admits the waiting build", async () => {
    const row = page.locator('#limits tr[data-key="prod-db"]');
    await row.waitFor();
    const cells = async () => (await row.locator("td").allTextContents()).slice(1);
    expect(await cells()).toEqual(["1", "0", "1", "1"]); // limit, running, admitted, waiting

    await page.fill("#limit-key", "prod-db");
    await page.fill("#limit-value", "2");
    await page.click("#limit-form button[type=submit]");
    await row.locator("td", { hasText: "2" }).first().waitFor();
    await page.locator("#queued .badge.key.held").waitFor({ state: "detached" });
    expect(await cells()).toEqual(["2", "0", "2", "0"]);
    expect(await api.queue.limit("prod-db")).toMatchObject({ limit: 2, admitted: 2, waiting: 0 });
    // The form does not send a limit below 1 (the browser checks min=1); nothing changes.
    await page.fill("#limit-value", "0");
    await page.click("#limit-form button[type=submit]");
    expect((await api.queue.limit("prod-db")).limit).toBe(2);
    expect(pageErrors).toEqual([]);
  });
});
