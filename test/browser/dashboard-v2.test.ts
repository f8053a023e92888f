/**
 * Dashboard v2 in a real browser (headless Chromium via playwright-core), on a real queue (test
 * PostgreSQL, a private Redis where named) with real workers:
 *
 * - one build followed from submit through its live log (lines appear while it runs, the Follow
 *   toggle keeps the newest in view) to completed with its result, timeline and progress chart;
 * - finished builds in finish order, filtered by status and strategy, paged Older/Newer;
 * - the charts of the last hour drawn from GET /v1/stats/history, whose numbers match what happened;
 * - the Redis persistence checks (the doctor's, on a real redis-server) and the mode history, which
 *   records the switch to PostgreSQL when that Redis is killed;
 * - 10,000 queued builds: the page shows the first 50 and the total, stays usable, its DOM bounded;
 * - keyboard: Tab reaches the controls with a visible focus ring; the favicon and assets are served.
 *
 * With OCULUS_SCREENSHOTS=1 each view is saved under docs/screenshots/ (README, "Dashboard").
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkPersistence } from "../../src/ops/persistence-checks.js";
import { Worker } from "../../src/worker/worker.js";
import { captureLogs, openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";
import { sql } from "../helpers/postgres.js";
import { eventually } from "../helpers/queue.js";
import { RedisServer } from "../helpers/redis-server.js";

const SCREENSHOTS = process.env.OCULUS_SCREENSHOTS === "1";
const SCREENSHOT_DIR = join(import.meta.dirname, "../../docs/screenshots");

async function screenshot(page: Page, name: string): Promise<void> {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

function trackErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  return errors;
}

/**
 * Text whose contrast with its background is below WCAG AA (4.5:1; 3:1 for large text), as
 * "text: ratio" strings. Runs in the page (a string: the DOM's globals are there): for each element
 * with text of its own, its colour against the first opaque background among it and its ancestors.
 */
const LOW_CONTRAST = `(() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || style.visibility === "hidden" || style.display === "none" || el.closest("[hidden], .skip")) continue;
    const a = lum(rgb(style.color).slice(0, 3));
    const b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) out.push(el.textContent.trim().slice(0, 40) + ": " + ratio.toFixed(2));
  }
  return out;
})()`;

let browser: Browser;
beforeAll(async () => {
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});

describe.each(["postgres", "redis"] as const)(
  "a build followed from submit to completed (%s mode)",
  (mode) => {
    let api: TestApi;
    let redis: RedisServer | undefined;
    let worker: Worker;
    const workerLog = captureLogs();
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });

    beforeAll(async () => {
      redis = mode === "redis" ? await RedisServer.start({ appendonly: false }) : undefined;
      api = await openTestApi(`dash_build_page_${mode}`, {
        queue: { progressIntervalMs: 50, ...(redis ? { redisUrl: redis.url } : {}) },
        statsHistory: { sampleMs: 200 },
      });
      await eventually(async () => api.queue.mode === mode);
      worker = new Worker(api.queue, {
        id: "log-worker",
        capacity: 1,
        logger: workerLog.logger,
        // Prints a line and reports progress every 200 ms, then waits for the test before its last line.
        handler: async (ctx) => {
          for (let i = 1; i <= 5; i++) {
            ctx.log(`training line ${i}`);
            await ctx.progress({ phase: "training", percent: i * 15 });
            await new Promise((r) => setTimeout(r, 200));
          }
          await released;
          ctx.log("finishing line");
          await ctx.progress({ phase: "done", percent: 100 });
          return { image: "registry.oculus/momentum:42" };
        },
      });
      await worker.start();
    });
    afterAll(async () => {
      release();
      await worker?.stop();
      await api?.cleanup();
      await redis?.destroy();
    });

    it("shows its params, live log lines while it runs, then completed with its result and timeline", async () => {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
      const errors = trackErrors(page);
      const base = await api.url();
      const { build } = await api.queue.submit({
        strategyId: "momentum-v2",
        params: { lr: 0.01, epochs: 5 },
      });
      await page.goto(`${base}/builds/${build.id}`);
      await page.locator("#params", { hasText: '"epochs": 5' }).waitFor();

      // Live: lines appear while the build is still running (its handler waits for the test to finish).
      await page
        .locator("#log", { hasText: "training line 5" })
        .waitFor()
        .catch(async (err: Error) => {
          // Which side was late: the build (not claimed, not logged) or the page (stream, render).
          const state = await api.queue.logState(build.id).catch((e: Error) => e.message);
          const shown = await page
            .locator("#log")
            .textContent()
            .catch(() => null);
          const streamState = await page
            .locator("#log-state")
            .textContent()
            .catch(() => null);
          const sessions = await sql(
            "public",
            `SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS in_xact, left(query, 120) AS query
             FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()`,
          ).catch((e: Error) => e.message);
          throw new Error(
            `${err.message}\nbuild ${JSON.stringify(await api.queue.get(build.id))}\nlog state ${JSON.stringify(state)}\n` +
              `page log (${streamState}): ${JSON.stringify(shown)}\nworker log:\n${workerLog.lines.join("\n")}\nsessions ${JSON.stringify(sessions)}`,
          );
        });
      expect((await api.queue.get(build.id)).status).toBe("running");
      await page.locator("#status", { hasText: "running" }).waitFor();
      expect(await page.locator("#log").textContent()).toMatch(
        /attempt 1.*\n(.|\n)*training line 1\n(.|\n)*training line 5/,
      );
      // Follow keeps the newest line in view: the log box is scrolled to its end.
      await eventually(async () =>
        page.locator("#log").evaluate((el) => el.scrollHeight <= el.clientHeight || el.scrollTop > 0),
      );
      // The progress chart has points (uPlot draws on a canvas) and the timeline the claim.
      await page.locator("#progress-now", { hasText: /\d+%/ }).waitFor();
      expect(await page.locator("#chart-progress canvas").count()).toBeGreaterThan(0);
      await page.locator("#timeline tr", { hasText: "running" }).first().waitFor();
      if (mode === "postgres") await screenshot(page, "build-running");

      release();
      await page.locator("#status", { hasText: "completed" }).waitFor();
      await page.locator("#log-state", { hasText: "ended: completed" }).waitFor();
      // The page shows the stored log exactly: every line, once, in order. (Its last line is there
      // unless the worker's final log write outlived its 2 s close wait on a very busy machine.)
      const stored = (await api.fetch("GET", `/v1/builds/${build.id}/logs`)).text;
      expect(stored).toContain("training line 5");
      expect(await page.locator("#log").textContent()).toBe(stored);
      await page.locator("#result", { hasText: "registry.oculus/momentum:42" }).waitFor();
      await page.locator("#timeline tr", { hasText: "completed" }).waitFor();
      await page.locator("#progress-now", { hasText: "100%" }).waitFor();
      expect(await page.locator("#last-error").textContent()).toBe("-");
      // The timeline holds every event of the build, in order.
      const types = await page.locator("#timeline tr td:nth-child(3)").allTextContents();
      expect(types[0]).toBe("queued");
      expect(types[1]).toBe("running");
      expect(types.at(-1)).toBe("completed");
      expect(types.filter((t) => t === "progress").length).toBeGreaterThanOrEqual(2);
      if (mode === "postgres") await screenshot(page, "build-completed");
      expect(await page.evaluate(LOW_CONTRAST)).toEqual([]);
      expect(errors).toEqual([]);
      await page.close();
    }, 60_000);

    it("a bad build id answers 400; an unknown one shows the API's error", async () => {
      const base = await api.url();
      expect((await fetch(`${base}/builds/not-a-uuid`)).status).toBe(400);
      const page = await browser.newPage();
      await page.goto(`${base}/builds/00000000-0000-4000-8000-000000000000`);
      await page.locator("#error", { hasText: "does not exist" }).waitFor();
      await page.close();
    });
  },
);

describe("finished builds, charts, keyboard", () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await openTestApi("dash_finished", { statsHistory: { sampleMs: 200 } });
    // The sampler counts events from its subscription on: wait for it before anything happens.
    await eventually(async () => (await api.fetch("GET", "/v1/stats/history")).json.since !== null);
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  /** Submits and finishes builds one at a time, so that finish order is known: 15 completed, 8 failed, 2 stopped. */
  async function finishBuilds(): Promise<string[]> {
    const order: string[] = [];
    for (let i = 0; i < 25; i++) {
      const strategyId = i % 2 === 0 ? "alpha" : "beta";
      const { build } = await api.queue.submit({ strategyId, maxRetries: 0 });
      if (i % 12 === 5) {
        await api.queue.stop(build.id, { actor: "ops", reason: `stop ${i}` });
        order.push(build.id);
        continue;
      }
      const [claimed] = await api.queue.claim("finisher", 1);
      if (!claimed) throw new Error("nothing claimed");
      if (i % 3 === 0) await api.queue.fail(claimed.id, claimed.lease, `boom ${i}`, { retryable: false });
      else await api.queue.complete(claimed.id, claimed.lease, { n: i });
      order.push(claimed.id);
    }
    return order.reverse(); // latest finish first
  }

  it("lists finished builds in finish order, filters by status and strategy, and pages", async () => {
    const latestFirst = await finishBuilds();
    // A build finished long ago that was retried and completed again is listed once, at its new finish.
    const retriedId = latestFirst.at(-1) as string;
    expect((await api.queue.get(retriedId)).status).toBe("failed");
    await api.queue.retry(retriedId);
    const [again] = await api.queue.claim("finisher", 1);
    if (again?.id !== retriedId) throw new Error("the retried build was not claimed");
    await api.queue.complete(again.id, again.lease, { again: true });
    const expected = [retriedId, ...latestFirst.slice(0, -1)];

    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const errors = trackErrors(page);
    await page.goto(`${await api.url()}/`);
    const rows = page.locator("#finished tr[data-build]");
    await eventually(async () => (await rows.count()) === 20);
    // The event log shows what happened before the page was opened (no event has happened since).
    await page.locator("#log", { hasText: `${retriedId} completed by finisher` }).waitFor();
    await page
      .locator("#log", { hasText: `${expected[1]} ` })
      .first()
      .waitFor();
    expect(await page.locator("#log", { hasText: `${retriedId} requeued by api` }).count()).toBe(1);
    // (Strings: the expressions run in the page, where the DOM's globals are.)
    const ids = async () =>
      (await page.evaluate(
        '[...document.querySelectorAll("#finished tr[data-build]")].map((tr) => tr.dataset.build)',
      )) as string[];
    expect(await ids()).toEqual(expected.slice(0, 20));
    await page.click("#finished-older");
    await page.locator("#finished-page", { hasText: "page 2" }).waitFor();
    await eventually(async () => JSON.stringify(await ids()) === JSON.stringify(expected.slice(20)));
    expect(await page.locator("#finished-older").isDisabled()).toBe(true);
    await page.click("#finished-newer");
    await page.locator("#finished-page", { hasText: "page 1" }).waitFor();
    await eventually(async () => JSON.stringify(await ids()) === JSON.stringify(expected.slice(0, 20)));

    const byApi = async (query: string) =>
      (await api.fetch("GET", `/v1/builds?order=finished&limit=1000&${query}`)).json.builds.map(
        (b: { id: string }) => b.id,
      );
    await page.selectOption("#finished-status", "failed");
    const failed = await byApi("status=failed");
    expect(failed.length).toBeGreaterThan(0);
    await eventually(async () => JSON.stringify(await ids()) === JSON.stringify(failed));
    for (const status of await page.locator("#finished tr td:nth-child(3)").allTextContents())
      expect(status).toBe("failed");
    await page.fill("#finished-strategy", "beta");
    await page.press("#finished-strategy", "Enter");
    const failedBeta = await byApi("status=failed&strategyId=beta");
    await eventually(async () => JSON.stringify(await ids()) === JSON.stringify(failedBeta));
    await page.selectOption("#finished-status", "");
    await page.fill("#finished-strategy", "");
    await page.press("#finished-strategy", "Enter");
    await eventually(async () => (await rows.count()) === 20);

    // The charts: one canvas per chart, and totals equal to what happened: 25 submits (a retry is
    // not a submit), 15 completions, 9 failures (the retried build's first run included), and 24
    // claims whose dispatch latency is known (23 first runs and the retry's).
    for (const chart of ["#chart-throughput", "#chart-depth", "#chart-latency"]) {
      expect(await page.locator(`${chart} canvas`).count(), chart).toBeGreaterThan(0);
    }
    const counts = await api.queue.statusCounts();
    expect(counts).toMatchObject({ completed: 15, failed: 8, stopped: 2 });
    const sum = async (key: string) => {
      const history = (await api.fetch("GET", "/v1/stats/history?minutes=60")).json;
      expect(history.minutes).toHaveLength(60);
      return history.minutes.reduce((n: number, m: Record<string, number>) => n + (m[key] ?? 0), 0);
    };
    await eventually(async () => (await sum("completed")) === 15);
    expect(await sum("submitted")).toBe(25);
    expect(await sum("failed")).toBe(9);
    expect(await sum("dispatches")).toBe(24);
    await page.reload();
    await page.locator("#stats-totals", { hasText: "25 submitted, 15 completed, 9 failed" }).waitFor();
    await screenshot(page, "overview");
    // Readable: every text on the page meets WCAG AA contrast (badges of each status included).
    expect(await page.evaluate(LOW_CONTRAST)).toEqual([]);

    // Keyboard: Tab from the top reaches the skip link, the form's fields and buttons, each with a
    // visible focus ring (outline).
    await page.keyboard.press("Escape");
    await page.evaluate("document.activeElement && document.activeElement.blur()");
    const reached: string[] = [];
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press("Tab");
      const focused = (await page.evaluate(
        "(() => { const el = document.activeElement; return { id: el.id || el.textContent || el.tagName, outline: getComputedStyle(el).outlineStyle }; })()",
      )) as { id: string; outline: string };
      reached.push(focused.id);
      expect(focused.outline, focused.id).not.toBe("none");
    }
    expect(reached).toEqual(
      expect.arrayContaining(["strategy", "priority", "Submit build", "token", "finished-status"]),
    );
    // A reload of the list does not take the focus away from a keyboard user: a build link keeps it
    // while a new finish pushes the rows down.
    const link = page.locator("#finished tr a").nth(2);
    const href = await link.getAttribute("href");
    await link.focus();
    await api.queue.submit({ strategyId: "late" });
    const [late] = await api.queue.claim("finisher", 1);
    if (!late) throw new Error("nothing claimed");
    await api.queue.complete(late.id, late.lease, {});
    await page.locator("#finished tr", { hasText: "late" }).first().waitFor();
    expect(await page.evaluate('document.activeElement.getAttribute("href")')).toBe(href);
    expect(errors).toEqual([]);
    await page.close();
  }, 90_000);

  it("serves the favicon, uPlot and the shared assets from its own origin", async () => {
    const base = await api.url();
    const icon = await fetch(`${base}/favicon.ico`);
    expect(icon.status).toBe(200);
    expect(icon.headers.get("content-type")).toMatch(/image\/svg\+xml/);
    const uplot = await fetch(`${base}/assets/uplot.js`);
    expect(uplot.status).toBe(200);
    expect(await uplot.text()).toContain("uPlot");
    const etag = uplot.headers.get("etag") ?? "";
    expect((await fetch(`${base}/assets/uplot.js`, { headers: { "if-none-match": etag } })).status).toBe(304);
    const missing = await api.fetch("GET", "/assets/secrets.txt");
    expect(missing.status).toBe(400);
    expect(missing.json.error.field).toBe("name");
  });
});

describe("persistence checks and mode history", () => {
  let redis: RedisServer;
  let api: TestApi;
  let probe: Redis;

  beforeAll(async () => {
    redis = await RedisServer.start({ appendonly: true });
    probe = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    await probe.connect();
    const report = await checkPersistence(probe, { readLog: false });
    probe.disconnect();
    api = await openTestApi("dash_persistence", {
      persistence: () => report,
      queue: { redisUrl: redis.url },
    });
    await eventually(async () => api.queue.mode === "redis");
  });
  afterAll(async () => {
    probe?.disconnect();
    await api?.cleanup();
    await redis?.destroy();
  });

  it("shows each check of the doctor, and the switch to PostgreSQL when Redis dies", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const errors = trackErrors(page);
    await page.goto(`${await api.url()}/`);
    const report = (await api.fetch("GET", "/health")).json.persistence;
    await page.locator("#persistence-status", { hasText: report.status }).waitFor();
    for (const check of report.checks as { name: string }[]) {
      await page.locator("#persistence tr", { hasText: check.name }).first().waitFor();
    }
    await page.locator("#modes tr", { hasText: "redis" }).first().waitFor();

    await redis.kill9();
    await eventually(async () => api.queue.mode === "postgres");
    const history = (await api.fetch("GET", "/v1/stats/history")).json;
    expect(history.modes.map((m: { mode: string }) => m.mode)).toEqual(
      expect.arrayContaining(["redis", "postgres"]),
    );
    expect(history.modes.at(-1).mode).toBe("postgres");
    // The page reloads this every 30 s; a reload shows it at once.
    await page.reload();
    await page.locator("#modes tr", { hasText: "postgres" }).first().waitFor();
    await page.locator("#mode", { hasText: /^postgres$/ }).waitFor();
    await screenshot(page, "persistence-and-modes");
    expect(errors.filter((e) => !/Failed to load resource/.test(e))).toEqual([]);
    await page.close();
  }, 60_000);
});

describe("10,000 queued builds", () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await openTestApi("dash_10k");
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("shows the first 50 and the total, stays usable, and keeps its DOM bounded", async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = trackErrors(page);
    await page.goto(`${await api.url()}/`);
    await page.locator("#stream", { hasText: "live" }).waitFor();
    await api.queue.submitMany(Array.from({ length: 10_000 }, (_, i) => ({ strategyId: `bulk-${i % 7}` })));
    await page.locator("#queued-count", { hasText: "the first 50 of 10000" }).waitFor({ timeout: 60_000 });
    expect(await page.locator("#queued tr").count()).toBe(50);
    expect(await page.locator("#length").textContent()).toBe("10000");
    // The event log keeps its last 200 lines, whatever arrived.
    await eventually(async () => (await page.locator("#log > div").count()) > 0);
    expect(await page.locator("#log > div").count()).toBeLessThanOrEqual(200);
    expect(await page.locator("tr").count()).toBeLessThan(400);

    // Usable: a submit from the form is accepted and shows up in the log and the count.
    await page.fill("#strategy", "after-the-flood");
    await page.click("#submit-form button[type=submit]");
    await page.locator("#log", { hasText: "submitted at position 10001" }).waitFor();
    await page.locator("#queued-count", { hasText: "of 10001" }).waitFor({ timeout: 30_000 });
    expect(await page.locator("#queued tr").count()).toBe(50);
    await screenshot(page, "overview-10k-queued");
    expect(errors).toEqual([]);
    await page.close();
  }, 180_000);
});
