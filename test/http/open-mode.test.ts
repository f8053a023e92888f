/**
 * Open mode (no tokens, src/http/open-mode.ts): only loopback Host values (and the allowlist) are
 * answered, so a DNS-rebound page gets 403; state-changing requests need a JSON content type or the
 * X-Oculus-Client header, so a cross-site form or `no-cors` fetch gets 415 and changes nothing. With
 * tokens, neither applies. The CLI client and the dashboard send what is needed.
 */
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiClient } from "../../src/cli/api-client.js";
import { web } from "../../src/generated/assets.js";
import { countBuilds, openTestApi, type TestApi } from "../helpers/api.js";

const ADMIN = "open-mode-admin-token-0123456789";

/** A request over the socket with a Host header of our choosing (fetch sets its own). */
function withHost(url: string, path: string, host: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: "GET", headers: { host } }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("open mode: Host values", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("open_mode_hosts", { allowedHosts: ["queue.internal"] });
  });
  afterAll(() => api?.cleanup());

  it.each([
    "localhost",
    "localhost:8080",
    "LOCALHOST.:8080",
    "127.0.0.1",
    "127.0.0.1:1",
    "127.1.2.3:8080",
    "[::1]",
    "[::1]:8080",
    "queue.internal",
    "Queue.Internal:8443",
  ])("Host %s is served", async (host) => {
    const res = await api.inject("GET", "/v1/queue", { headers: { host } });
    expect(res.status).toBe(200);
  });

  it.each([
    "rebind.attacker.example",
    "rebind.attacker.example:8080",
    "localhost.attacker.example",
    "127.0.0.1.attacker.example",
    "10.0.0.5:8080",
    "[::2]:8080",
    "other.internal",
  ])("Host %s: 403 in the error shape, and nothing is created", async (host) => {
    const before = await countBuilds(api.queue);
    const submit = await api.inject("POST", "/v1/builds", {
      headers: { host },
      body: { strategyId: "rebind" },
    });
    expect(submit.status).toBe(403);
    expect(submit.json.error.code).toBe("forbidden");
    expect(submit.json.error.message).toMatch(/without tokens the API answers only to loopback names/);
    expect(submit.json.error.message).toMatch(/OCULUS_HTTP_ALLOWED_HOSTS/);
    expect((await api.inject("GET", "/v1/queue", { headers: { host } })).status).toBe(403);
    expect((await api.inject("GET", "/", { headers: { host } })).status).toBe(403);
    expect(await countBuilds(api.queue)).toBe(before);
  });

  it("over a real socket: the Host header as sent decides", async () => {
    const url = await api.url();
    expect((await withHost(url, "/v1/queue", "rebind.attacker.example")).status).toBe(403);
    expect((await withHost(url, "/v1/queue", `localhost:${new URL(url).port}`)).status).toBe(200);
  });
});

describe("open mode: state-changing requests", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("open_mode_csrf");
  });
  afterAll(() => api?.cleanup());

  it.each([
    ["no Content-Type, no body (a no-cors fetch)", {}],
    ["a form (application/x-www-form-urlencoded)", { "content-type": "application/x-www-form-urlencoded" }],
    ["multipart/form-data", { "content-type": "multipart/form-data; boundary=x" }],
    ["text/plain", { "content-type": "text/plain" }],
  ])("POST /stop with %s: 415, the build is not stopped", async (_label, headers) => {
    const { build } = await api.queue.submit({ strategyId: "csrf" });
    const res = await api.inject("POST", `/v1/builds/${build.id}/stop`, { headers });
    expect(res.status).toBe(415);
    expect(res.json.error).toEqual({
      code: "invalid_input",
      message: expect.stringMatching(/needs Content-Type: application\/json .* or an x-oculus-client header/),
    });
    expect((await api.queue.get(build.id)).status).toBe("queued");
    await api.queue.stop(build.id);
  });

  it("a submit as a form: 415, nothing created", async () => {
    const before = await countBuilds(api.queue);
    const res = await api.inject("POST", "/v1/builds", {
      rawBody: "strategyId=csrf",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(res.status).toBe(415);
    expect(await countBuilds(api.queue)).toBe(before);
  });

  it("with Content-Type application/json and {}, or the X-Oculus-Client header and no body: served", async () => {
    const a = await api.queue.submit({ strategyId: "csrf-ok" });
    const json = await api.inject("POST", `/v1/builds/${a.build.id}/stop`, { body: {} });
    expect(json.status).toBe(202);
    const b = await api.queue.submit({ strategyId: "csrf-ok" });
    const header = await api.fetch("POST", `/v1/builds/${b.build.id}/stop`, {
      headers: { "x-oculus-client": "script" },
    });
    expect(header.status).toBe(202);
    const retried = await api.fetch("POST", `/v1/builds/${b.build.id}/retry`, { body: {} });
    expect(retried.status).toBe(202);
    await api.queue.stop(b.build.id);
  });

  it("reads and unknown routes are not affected", async () => {
    expect((await api.inject("GET", "/v1/queue")).status).toBe(200);
    expect((await api.inject("DELETE", "/v1/builds")).status).toBe(404);
  });

  it("the CLI client's stop and retry are served (they send {} as JSON)", async () => {
    const { build } = await api.queue.submit({ strategyId: "cli" });
    const client = new ApiClient({ url: await api.url(), token: undefined });
    const stopped = await client.post<{ build: { status: string } }>(`/v1/builds/${build.id}/stop`, {});
    expect(stopped.build.status).toBe("stopped");
    const retried = await client.post<{ build: { status: string } }>(`/v1/builds/${build.id}/retry`, {});
    expect(retried.build.status).toBe("queued");
    await api.queue.stop(build.id);
  });

  it("the dashboard sends a JSON body with every POST", () => {
    const html = web["dashboard.html"];
    const posts = [...html.matchAll(/api\("POST", [^;]*?\)/g)].map((m) => m[0]);
    expect(posts.length).toBeGreaterThanOrEqual(3);
    for (const call of posts) expect(call, call).toMatch(/api\("POST", [^,]+, [^)]/);
  });
});

describe("with tokens", () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await openTestApi("open_mode_tokens", {
      tokens: [{ name: "ops", token: ADMIN, scopes: ["admin"] }],
    });
  });
  afterAll(() => api?.cleanup());

  it("any Host is served, and a POST without a body needs no content type (the token is the proof)", async () => {
    const host = "queue.example.com";
    expect((await api.inject("GET", "/v1/queue", { token: ADMIN, headers: { host } })).status).toBe(200);
    const { build } = await api.queue.submit({ strategyId: "tokens" });
    const res = await api.inject("POST", `/v1/builds/${build.id}/stop`, { token: ADMIN, headers: { host } });
    expect(res.status).toBe(202);
  });
});
