import { describe, expect, it } from "vitest";
import {
  checkWorkerInfo,
  findUnstorableJson,
  MAX_PARAMS_BYTES,
  MAX_PARAMS_DEPTH,
  parseBuildId,
  parseOptionalText,
  parseSubmit,
  parseSubmitMany,
  parseWorkerId,
} from "../../src/core/build.js";
import { PayloadTooLargeError, ValidationError } from "../../src/core/errors.js";

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ValidationError) return err.field;
    throw err;
  }
  return undefined;
}

describe("submit validation", () => {
  it("fills the defaults", () => {
    expect(parseSubmit({ strategyId: "s" })).toEqual({
      strategyId: "s",
      priority: 0,
      params: {},
      maxRetries: 3,
      requires: {},
      supersede: false,
    });
  });

  it.each([
    [{}, "strategyId"],
    [{ strategyId: "" }, "strategyId"],
    [{ strategyId: 7 }, "strategyId"],
    [{ strategyId: "s", priority: 1001 }, "priority"],
    [{ strategyId: "s", priority: -1001 }, "priority"],
    [{ strategyId: "s", priority: 1.5 }, "priority"],
    [{ strategyId: "s", priority: "high" }, "priority"],
    [{ strategyId: "s", params: [1, 2] }, "params"],
    [{ strategyId: "s", params: "x" }, "params"],
    [{ strategyId: "s", maxRetries: -1 }, "maxRetries"],
    [{ strategyId: "s", idempotencyKey: "" }, "idempotencyKey"],
    [{ strategyId: "s", colour: "red" }, "colour"],
    [{ strategyId: "s", concurrencyKey: "" }, "concurrencyKey"],
    [{ strategyId: "s", concurrencyKey: " padded" }, "concurrencyKey"],
    [{ strategyId: "s", concurrencyKey: "tab\there" }, "concurrencyKey"],
    [{ strategyId: "s", concurrencyKey: "bidi\u202e" }, "concurrencyKey"],
    [{ strategyId: "s", concurrencyKey: "k".repeat(201) }, "concurrencyKey"],
    [{ strategyId: "s", supersede: 1 }, "supersede"],
    [null, "(body)"],
  ])("names the field of a bad request %j", (input, field) => {
    expect(fieldOf(() => parseSubmit(input))).toBe(field);
  });

  it("refuses oversize params with the size and the limit", () => {
    const params = { blob: "x".repeat(MAX_PARAMS_BYTES) };
    expect(() => parseSubmit({ strategyId: "s", params })).toThrow(PayloadTooLargeError);
  });

  it("names the index of the bad build in a batch", () => {
    expect(fieldOf(() => parseSubmitMany([{ strategyId: "a" }, { strategyId: "b", priority: 5000 }]))).toBe(
      "builds[1].priority",
    );
    expect(fieldOf(() => parseSubmitMany([]))).toBe("builds");
    expect(fieldOf(() => parseSubmitMany("x"))).toBe("builds");
  });

  it("accepts only UUIDs as build ids", () => {
    expect(fieldOf(() => parseBuildId("1; DROP TABLE builds"))).toBe("id");
    expect(parseBuildId("0b6f5c3e-2a8e-436c-972f-c7a238876415")).toBe("0b6f5c3e-2a8e-436c-972f-c7a238876415");
  });
});

/** `depth` objects nested in each other: {a: {a: ... 1}}; depth 1 is {a: 1}. */
function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { a: 1 };
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

describe("what PostgreSQL cannot store is refused, naming where", () => {
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  it.each([
    [{ strategyId: "a\u0000" }, "strategyId", /NUL/],
    [{ strategyId: "\ud800x" }, "strategyId", /lone surrogate/],
    [{ strategyId: "a", idempotencyKey: "\udfff" }, "idempotencyKey", /lone surrogate/],
    [{ strategyId: "a", params: { x: "a\u0000" } }, "params.x", /NUL/],
    [{ strategyId: "a", params: { list: [1, { y: "\ud800" }] } }, "params.list.1.y", /lone surrogate/],
    [{ strategyId: "a", params: { x: { "bad\u0000key": 1 } } }, "params.x", /key that contains a NUL/],
    [{ strategyId: "a", params: { n: Number.POSITIVE_INFINITY } }, "params.n", /finite/],
    [{ strategyId: "a", params: { n: [Number.NaN] } }, "params.n.0", /finite/],
    [{ strategyId: "a", params: { n: 10n } }, "params.n", /bigint/],
    [{ strategyId: "a", params: { f: () => 1 } }, "params.f", /function/],
    // zod copies params itself; the cycle is found one level further, in the caller's object.
    [{ strategyId: "a", params: cycle }, "params.self.self", /cycle/],
    [{ strategyId: "a", priority: Number.POSITIVE_INFINITY }, "priority", /number/],
  ])("case %#: %s", (input, field, reason) => {
    expect(() => parseSubmit(input)).toThrow(reason);
    expect(fieldOf(() => parseSubmit(input))).toBe(field);
  });

  it(`params may nest ${MAX_PARAMS_DEPTH} levels (params itself is the first), not more`, () => {
    expect(parseSubmit({ strategyId: "a", params: nested(MAX_PARAMS_DEPTH) }).params).toEqual(
      nested(MAX_PARAMS_DEPTH),
    );
    const field = fieldOf(() => parseSubmit({ strategyId: "a", params: nested(MAX_PARAMS_DEPTH + 1) }));
    expect(field).toBe(`params${".a".repeat(MAX_PARAMS_DEPTH)}`);
  });

  it("a very deep value is refused without exhausting the stack", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(findUnstorableJson({ deep }, MAX_PARAMS_DEPTH)?.reason).toMatch(/nested deeper than 32/);
    expect(fieldOf(() => parseSubmit({ strategyId: "a", params: { deep } }))).toMatch(/^params\.deep(\.0)+$/);
  });

  it("values JSON turns into something storable are taken as JSON.stringify would", () => {
    const at = new Date("2026-01-02T03:04:05.000Z");
    const parsed = parseSubmit({ strategyId: "a", params: { at, gone: undefined, emoji: "\ud83d\ude00" } });
    expect(JSON.parse(JSON.stringify(parsed.params))).toEqual({
      at: at.toISOString(),
      emoji: "\ud83d\ude00",
    });
  });

  it("names the build of a batch", () => {
    expect(
      fieldOf(() => parseSubmitMany([{ strategyId: "a" }, { strategyId: "b", params: { x: "\u0000" } }])),
    ).toBe("builds[1].params.x");
  });

  it("checks worker ids and optional texts (stop reasons) too", () => {
    expect(fieldOf(() => parseWorkerId("w\u0000"))).toBe("workerId");
    expect(fieldOf(() => parseOptionalText("why\u0000", "reason", 1000))).toBe("reason");
    expect(fieldOf(() => parseOptionalText("x".repeat(1001), "reason", 1000))).toBe("reason");
    expect(fieldOf(() => parseOptionalText(5, "reason", 1000))).toBe("reason");
    expect(parseOptionalText(undefined, "reason", 1000)).toBeNull();
    expect(parseOptionalText("fine \ud83d\ude00", "reason", 1000)).toBe("fine \ud83d\ude00");
  });

  it("checks what a worker registers", () => {
    const info = { id: "w1", hostname: "host", version: "1.0.0", labels: { gpu: "a100" } };
    expect(() => checkWorkerInfo(info)).not.toThrow();
    expect(fieldOf(() => checkWorkerInfo({ ...info, id: "w\u0000" }))).toBe("id");
    expect(fieldOf(() => checkWorkerInfo({ ...info, hostname: "h\ud800" }))).toBe("hostname");
    expect(fieldOf(() => checkWorkerInfo({ ...info, version: 1 }))).toBe("version");
    expect(fieldOf(() => checkWorkerInfo({ ...info, labels: { gpu: "a\u0000" } }))).toBe("labels.gpu");
    expect(fieldOf(() => checkWorkerInfo({ ...info, labels: { "g\u0000": "x" } }))).toBe("labels");
  });
});
