/**
 * The store-error classifier: which PostgreSQL and driver errors mean "the record is away or cannot
 * take this now" (StoreUnavailableError with a reason and a Retry-After hint), and which pass through.
 */
import { describe, expect, it } from "vitest";
import { StoreUnavailableError, ValidationError } from "../../src/core/errors.js";
import { asStoreError, classifyStoreError } from "../../src/queue/store-errors.js";

const withCode = (code: string, message = `error ${code}`) => Object.assign(new Error(message), { code });

describe("store error classifier", () => {
  it.each([
    ["08006", "unreachable"],
    ["08001", "unreachable"],
    ["57P01", "unreachable"],
    ["57P02", "unreachable"],
    ["57P03", "unreachable"],
    ["57014", "timeout"],
    ["25P03", "timeout"],
    ["25006", "read_only"],
    ["40001", "conflict"],
    ["40P01", "conflict"],
    ["53300", "busy"],
    ["53100", "busy"],
    ["55P03", "busy"],
    ["ECONNREFUSED", "unreachable"],
    ["ECONNRESET", "unreachable"],
    ["ETIMEDOUT", "unreachable"],
    ["EPIPE", "unreachable"],
    ["ENOTFOUND", "unreachable"],
    ["EHOSTUNREACH", "unreachable"],
  ])("SQLSTATE / errno %s is transient: %s", (code, reason) => {
    const converted = asStoreError(withCode(code));
    expect(converted).toBeInstanceOf(StoreUnavailableError);
    expect((converted as StoreUnavailableError).reason).toBe(reason);
    expect((converted as StoreUnavailableError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect((converted as StoreUnavailableError).httpStatus).toBe(503);
  });

  it.each([
    ["Query read timeout", "timeout"],
    ["timeout exceeded when trying to connect", "busy"],
    ["Connection terminated unexpectedly", "unreachable"],
    ["Connection terminated due to connection timeout", "unreachable"],
    ["Client has encountered a connection error and is not queryable", "unreachable"],
  ])("pg's message %j is transient: %s", (message, reason) => {
    expect(classifyStoreError(new Error(message))?.reason).toBe(reason);
  });

  it("finds the cause inside a connect error (AggregateError of every address tried)", () => {
    const err = new AggregateError([withCode("ECONNREFUSED")], "");
    expect(classifyStoreError(err)?.reason).toBe("unreachable");
  });

  it.each([
    ["23505", "unique violation"],
    ["22P02", "invalid text representation"],
    ["42P01", "undefined table"],
    ["XX000", "internal error"],
  ])("the caller's fault or a bug passes through (%s %s)", (code) => {
    const err = withCode(code);
    expect(asStoreError(err)).toBe(err);
    expect(classifyStoreError(err)).toBeUndefined();
  });

  it("typed errors pass through unchanged; a plain Error too", () => {
    const typed = new ValidationError("x", "bad");
    expect(asStoreError(typed)).toBe(typed);
    const plain = new Error("something else");
    expect(asStoreError(plain)).toBe(plain);
  });

  it("a StoreUnavailableError keeps its reason and hint", () => {
    const err = new StoreUnavailableError("full", undefined, { reason: "busy", retryAfterSeconds: 3 });
    expect(classifyStoreError(err)).toEqual({ reason: "busy", retryAfterSeconds: 3 });
  });
});
