import { describe, expect, it } from "vitest";
import { printable, printableLines } from "../../src/core/printable.js";

describe("printable", () => {
  it("shows control characters as visible escapes and leaves other text alone", () => {
    expect(printable("a\u001b[31mred\r\nb\tc\u0000\u007f\u009b")).toBe(
      "a\\x1b[31mred\\r\\nb\\tc\\x00\\x7f\\x9b",
    );
    expect(printable("right\u202eto-left \u2066x\u2069 \u2028")).toBe(
      "right\\u202eto-left \\u2066x\\u2069 \\u2028",
    );
    expect(printable("ça va, 日本, 🙂, [brackets]")).toBe("ça va, 日本, 🙂, [brackets]");
  });

  it("doubles a backslash only where it could pass for an escape", () => {
    expect(printable("C:\\temp\\x1b")).toBe("C:\\\\temp\\\\x1b");
    expect(printable("a\\b")).toBe("a\\b");
  });

  it("keeps line breaks of a multi-line text", () => {
    expect(printableLines("one\u001b\ntwo\r")).toBe("one\\x1b\ntwo\\r");
  });
});
