/**
 * Security headers (src/http/security-headers.ts): the dashboard's CSP allows its own inline style
 * and script by hash and nothing else; /docs and the API get theirs; every response (errors and the
 * event streams too) carries nosniff, no framing and no referrer. In Chromium, the dashboard and
 * /docs work under their policies with no violation reported. Credential-like query parameters do
 * not reach the log.
 */
import { createHash } from "node:crypto";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { web } from "../../src/generated/assets.js";
import { API_CSP, DOCS_CSP } from "../../src/http/security-headers.js";
import { openTestApi, type TestApi } from "../helpers/api.js";
import { launchBrowser } from "../helpers/browser.js";

const READ = "headers-read-token-0123456789ab";

const sha256 = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

function expectCommonHeaders(headers: Record<string, string>): void {
  expect(headers["x-content-type-options"]).toBe("nosniff");
  expect(headers["x-frame-options"]).toBe("DENY");
  expect(headers["referrer-policy"]).toBe("no-referrer");
  expect(headers["content-security-policy"]).toMatch(/frame-ancestors 'none'/);
}

describe("security headers", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("security_headers", {
      tokens: [{ name: "reader", token: READ, scopes: ["read"] }],
    });
  });
  afterAll(() => api?.cleanup());

  it("GET /: a CSP that allows the page's own inline style and script by their hashes, and nothing inline else", async () => {
    const res = await api.inject("GET", "/");
    expect(res.status).toBe(200);
    expectCommonHeaders(res.headers);
    const html = web["dashboard.html"];
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1] ?? "";
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)?.[1] ?? "";
    const csp = res.headers["content-security-policy"] ?? "";
    expect(csp).toContain(`script-src ${sha256(script)}`);
    expect(csp).toContain(`style-src ${sha256(style)}`);
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/connect-src 'self'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    // Inline attributes would be refused by that policy: the page has none.
    const markup = html.replace(/<!--[\s\S]*?-->/g, "").replace(/<script>[\s\S]*?<\/script>/g, "");
    expect(markup).not.toMatch(/\sstyle=|\son[a-z]+=/i);
  });

  it("GET /builds/:id: the same rules for the build page's own inline style and script", async () => {
    const res = await api.inject("GET", "/builds/00000000-0000-4000-8000-000000000000");
    expect(res.status).toBe(200);
    expectCommonHeaders(res.headers);
    const html = web["build.html"];
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1] ?? "";
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)?.[1] ?? "";
    const csp = res.headers["content-security-policy"] ?? "";
    expect(csp).toContain(`script-src ${sha256(script)} 'self'`);
    expect(csp).toContain(`style-src ${sha256(style)} 'self'`);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    const markup = html.replace(/<!--[\s\S]*?-->/g, "").replace(/<script>[\s\S]*?<\/script>/g, "");
    expect(markup).not.toMatch(/\sstyle=|\son[a-z]+=/i);
    // Assets load nothing themselves.
    expect((await api.inject("GET", "/assets/uplot.js")).headers["content-security-policy"]).toBe(API_CSP);
  });

  it("/docs: its own policy (files from this origin)", async () => {
    for (const path of ["/docs", "/docs/static/swagger-initializer.js"]) {
      const res = await api.inject("GET", path);
      expect(res.status, path).toBe(200);
      expectCommonHeaders(res.headers);
      expect(res.headers["content-security-policy"]).toBe(DOCS_CSP);
    }
  });

  it("API responses, errors and event streams: nosniff and a policy that loads nothing", async () => {
    for (const [path, token, status] of [
      ["/v1/queue", READ, 200],
      ["/v1/queue", undefined, 401],
      ["/v1/nothing", READ, 404],
      ["/health", undefined, 200],
      ["/metrics", READ, 200],
      ["/openapi.json", undefined, 200],
    ] as const) {
      const res = await api.inject("GET", path, token ? { token } : {});
      expect(res.status, path).toBe(status);
      expectCommonHeaders(res.headers);
      expect(res.headers["content-security-policy"], path).toBe(API_CSP);
    }
    const controller = new AbortController();
    const stream = await fetch(`${await api.url()}/v1/events`, {
      headers: { authorization: `Bearer ${READ}` },
      signal: controller.signal,
    });
    expect(stream.status).toBe(200);
    expect(stream.headers.get("x-content-type-options")).toBe("nosniff");
    expect(stream.headers.get("content-security-policy")).toBe(API_CSP);
    controller.abort();
  });

  it("a token in the query string (not accepted, but sent) is redacted in the request log", async () => {
    const secret = "query-secret-0123456789abcdef";
    await api.inject("GET", `/v1/queue?access_token=${secret}&limit=5`, { token: READ });
    await api.inject("GET", `/v1/builds?token=${secret}`, { token: READ });
    // Requests are logged by path only (at debug, server.ts); a logged request object has its
    // credential-looking query parameters redacted (request-log.ts).
    expect(api.logs.join("\n")).not.toContain(secret);
  });
});

describe("the pages under their policies, in Chromium", () => {
  let api: TestApi;
  let browser: Browser;
  beforeAll(async () => {
    api = await openTestApi("security_headers_browser");
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.cleanup();
  });

  it("the dashboard and /docs run with no CSP violation", async () => {
    const page = await browser.newPage();
    const violations: string[] = [];
    page.on("console", (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text());
    });
    page.on("pageerror", (err) => violations.push(err.message));
    await page.goto(`${await api.url()}/`);
    // The script ran (its stream went live) and the stylesheet applied (the token field's margin).
    await page.locator("#stream", { hasText: "live" }).waitFor();
    // (A string: the function runs in the page, where the DOM's globals are.)
    const margin = await page.evaluate('getComputedStyle(document.getElementById("token")).marginLeft');
    expect(margin).not.toBe("0px");
    // uPlot (from /assets/) drew its charts: canvases exist, sized through the CSSOM.
    await page.locator("#chart-throughput canvas").first().waitFor();
    // A build's page: its script ran (the fields are filled) and its chart and styles loaded.
    const { build } = await api.queue.submit({ strategyId: "csp-build-page" });
    await page.goto(`${await api.url()}/builds/${build.id}`);
    await page.locator("#details", { hasText: "csp-build-page" }).waitFor();
    await page.locator("#chart-progress canvas").first().waitFor();
    await page.goto(`${await api.url()}/docs`);
    await page.locator(".swagger-ui .info .title", { hasText: "Oculus build queue" }).waitFor();
    expect(violations).toEqual([]);
  });
});
