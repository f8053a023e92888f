/**
 * The dashboard's schedules: a schedule ticking every second shows its cron and zone, its next tick,
 * and the build of its last tick (a link to the build page); Pause and Resume act on the API.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";
import { eventually } from "../helpers/queue.js";

describe("dashboard schedules in Chromium", () => {
  let api: TestApi;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    api = await openTestApi("dashboard_schedules");
    await api.queue.schedules.add({
      name: "every-second",
      cron: "* * * * * *",
      timezone: "Europe/Berlin",
      strategyId: "scheduled-strategy",
    });
    api.queue.startScheduler();
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  });
  afterAll(async () => {
    await browser?.close();
    await api?.cleanup();
  });

  it("lists a schedule with its last build, and pauses and resumes it", async () => {
    // The schedule has ticked before the page loads: its last build is there at once.
    await eventually(
      async () => (await api.queue.schedules.get("every-second")).lastBuildId !== null,
      30_000,
    );
    await page.goto(`${await api.url()}/`);
    const row = page.locator('#schedules tr[data-schedule="every-second"]');
    await row.waitFor();
    expect(await row.textContent()).toContain("* * * * * * (Europe/Berlin)");
    expect(await row.textContent()).toContain("scheduled-strategy");
    expect(await row.textContent()).toMatch(/CES?T/); // the next tick on the zone's own clock
    const lastBuild = await row.locator("a").getAttribute("href");
    expect(lastBuild).toMatch(/^\/builds\/[0-9a-f-]{36}$/);
    const id = lastBuild?.split("/").at(-1) as string;
    expect((await api.queue.get(id)).strategyId).toBe("scheduled-strategy");

    await row.locator("button[data-pause]").click();
    await row.locator("button[data-resume]").waitFor();
    expect(await row.textContent()).toContain("paused");
    expect((await api.queue.schedules.get("every-second")).paused).toBe(true);

    await row.locator("button[data-resume]").click();
    await row.locator("button[data-pause]").waitFor();
    expect((await api.queue.schedules.get("every-second")).paused).toBe(false);
    expect(await row.textContent()).toContain("active");
    expect(pageErrors).toEqual([]);
  });
});
