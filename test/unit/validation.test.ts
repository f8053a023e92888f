import { describe, expect, it } from "vitest";
import { MAX_PARAMS_BYTES, parseBuildId, parseSubmit, parseSubmitMany } from "../../src/core/build.js";
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
