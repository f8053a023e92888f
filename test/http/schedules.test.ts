/**
 * /v1/schedules over HTTP (issue 14): create, read, list, replace, pause, resume, remove; bad input
 * is a 400 naming the field (the cron expression and the zone with why) and writes nothing; 404,
 * 409; reads need `read`, changes `admin`; the routes are in the OpenAPI document.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";

const ADMIN = "sched-admin-token-0123456789";
const READER = "sched-reader-token-0123456789";

describe("/v1/schedules", () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await openTestApi("http_schedules", {
      tokens: [
        { name: "ops", token: ADMIN, scopes: ["admin"] },
        { name: "dash", token: READER, scopes: ["read", "submit"] },
      ],
    });
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  const call = (method: string, url: string, body?: unknown, token = ADMIN) =>
    api.inject(method, url, { token, body });

  it("creates, reads, lists, replaces, pauses, resumes and removes a schedule", async () => {
    const created = await call("POST", "/v1/schedules", {
      name: "nightly",
      cron: "0 2 * * *",
      timezone: "Europe/Berlin",
      strategyId: "momentum-v2",
      params: { lr: 0.01 },
      priority: 5,
      requires: { gpu: "true" },
      maxRetries: 1,
      timeoutSeconds: 3600,
    });
    expect(created.status, created.text).toBe(201);
    const s = created.json.schedule;
    expect(s).toMatchObject({
      name: "nightly",
      cron: "0 2 * * *",
      timezone: "Europe/Berlin",
      strategyId: "momentum-v2",
      params: { lr: 0.01 },
      priority: 5,
      requires: { gpu: "true" },
      maxRetries: 1,
      timeoutSeconds: 3600,
      paused: false,
      lastTickAt: null,
      lastBuildId: null,
      lastMissed: 0,
      lastError: null,
    });
    // 02:00 in Berlin: 01:00Z in winter, 00:00Z in summer; the local clock reads 02:00.
    expect(s.nextTickAt).toMatch(/T0[01]:00:00\.000Z$/);
    expect(s.nextTickLocal).toMatch(/^\d{4}-\d\d-\d\d 02:00:00 (CET|CEST|GMT\+1|GMT\+2)$/);

    const utc = await call("POST", "/v1/schedules", { name: "hourly", cron: "0 * * * *", strategyId: "s" });
    expect(utc.json.schedule).toMatchObject({ timezone: "UTC" });
    expect(utc.json.schedule.nextTickLocal).toMatch(/ 00:00 UTC$|:00:00 UTC$/);

    const got = await call("GET", "/v1/schedules/nightly", undefined, READER);
    expect(got.status).toBe(200);
    expect(got.json.schedule).toEqual(s);
    const list = await call("GET", "/v1/schedules", undefined, READER);
    expect(list.json.schedules.map((x: { name: string }) => x.name)).toEqual(["hourly", "nightly"]);

    const replaced = await call("PUT", "/v1/schedules/nightly", {
      cron: "30 3 * * 1-5",
      strategyId: "momentum-v3",
    });
    expect(replaced.status, replaced.text).toBe(200);
    expect(replaced.json.schedule).toMatchObject({
      cron: "30 3 * * 1-5",
      timezone: "UTC",
      strategyId: "momentum-v3",
      params: {},
      priority: 0,
      requires: {},
      maxRetries: 3,
      timeoutSeconds: null,
    });
    expect(replaced.json.schedule.nextTickAt).toMatch(/T03:30:00\.000Z$/);

    const paused = await call("POST", "/v1/schedules/nightly/pause", {});
    expect(paused.json.schedule).toMatchObject({ paused: true, nextTickAt: null, nextTickLocal: null });
    const resumed = await call("POST", "/v1/schedules/nightly/resume");
    expect(resumed.status, resumed.text).toBe(200);
    expect(resumed.json.schedule.paused).toBe(false);
    expect(resumed.json.schedule.nextTickAt).toMatch(/T03:30:00\.000Z$/);

    const removed = await call("DELETE", "/v1/schedules/nightly");
    expect(removed.status).toBe(200);
    expect(removed.json.schedule.name).toBe("nightly");
    for (const [method, url, body] of [
      ["GET", "/v1/schedules/nightly"],
      ["DELETE", "/v1/schedules/nightly"],
      ["POST", "/v1/schedules/nightly/pause", {}],
      ["POST", "/v1/schedules/nightly/resume", {}],
      ["PUT", "/v1/schedules/nightly", { cron: "* * * * *", strategyId: "x" }],
    ] as const) {
      const res = await call(method, url, body);
      expect(res.status, `${method} ${url}`).toBe(404);
      expect(res.json.error.code).toBe("not_found");
    }
    const dup = await call("POST", "/v1/schedules", { name: "hourly", cron: "0 * * * *", strategyId: "s" });
    expect(dup.status).toBe(409);
    expect(dup.json.error.code).toBe("already_exists");
  });

  it("refuses bad input with a 400 naming the field and why, and writes nothing", async () => {
    const before = (await call("GET", "/v1/schedules")).json;
    const cases: [unknown, string, RegExp][] = [
      [
        { name: "b", cron: "61 * * * *", strategyId: "s" },
        "cron",
        /"61 \* \* \* \*" is not a valid cron expression: .*61/,
      ],
      [{ name: "b", cron: "* * *", strategyId: "s" }, "cron", /needs 5/],
      [{ name: "b", cron: "* * * * *", timezone: "Mars/Base", strategyId: "s" }, "timezone", /IANA/],
      [{ name: "b", cron: 5, strategyId: "s" }, "cron", /string/],
      [{ name: "has space", cron: "* * * * *", strategyId: "s" }, "name", /letters/],
      [{ name: "b", cron: "* * * * *", strategyId: "s", extra: 1 }, "extra", /unknown/],
      [
        { name: "b", cron: "* * * * *", strategyId: "s", params: { schedule: 1 } },
        "params.schedule",
        /reserved/,
      ],
      [{ name: "b", cron: "* * * * *", strategyId: "s", priority: 1.5 }, "priority", /integer/],
    ];
    for (const [body, field, message] of cases) {
      const res = await call("POST", "/v1/schedules", body);
      expect(res.status, res.text).toBe(400);
      expect(res.json.error.code).toBe("invalid_input");
      expect(res.json.error.field, res.text).toBe(field);
      expect(res.json.error.message).toMatch(message);
    }
    const badPut = await call("PUT", "/v1/schedules/hourly", { cron: "0 25 * * *", strategyId: "s" });
    expect(badPut.status).toBe(400);
    expect(badPut.json.error.field).toBe("cron");
    const badName = await call("GET", "/v1/schedules/a%20b");
    expect(badName.status).toBe(400);
    expect(badName.json.error.field).toBe("name");
    expect((await call("GET", "/v1/schedules")).json).toEqual(before);
  });

  it("reads need `read`, changes need `admin`", async () => {
    const asReader = await call(
      "POST",
      "/v1/schedules",
      { name: "r", cron: "* * * * *", strategyId: "s" },
      READER,
    );
    expect(asReader.status).toBe(403);
    expect((await call("DELETE", "/v1/schedules/hourly", undefined, READER)).status).toBe(403);
    expect((await call("POST", "/v1/schedules/hourly/pause", {}, READER)).status).toBe(403);
    expect((await api.inject("GET", "/v1/schedules")).status).toBe(401);
    expect((await call("GET", "/v1/schedules/hourly")).json.schedule.paused).toBe(false);
  });

  it("lists the routes in the OpenAPI document", async () => {
    const doc = (await api.inject("GET", "/openapi.json")).json;
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/schedules",
        "/v1/schedules/{name}",
        "/v1/schedules/{name}/pause",
        "/v1/schedules/{name}/resume",
      ]),
    );
    expect(Object.keys(doc.paths["/v1/schedules/{name}"])).toEqual(
      expect.arrayContaining(["get", "put", "delete"]),
    );
    expect(
      doc.paths["/v1/schedules"].post.requestBody.content["application/json"].schema.properties,
    ).toHaveProperty("cron");
  });
});
