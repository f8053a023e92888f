import { describe, expect, it } from "vitest";
import { logFormat, prettyLine } from "../../src/core/logger.js";

describe("log format", () => {
  it("is pretty on a terminal and JSON otherwise, unless OCULUS_LOG_FORMAT says", () => {
    expect(logFormat({}, true)).toBe("pretty");
    expect(logFormat({}, false)).toBe("json");
    expect(logFormat({ OCULUS_LOG_FORMAT: "json" }, true)).toBe("json");
    expect(logFormat({ OCULUS_LOG_FORMAT: "PRETTY" }, false)).toBe("pretty");
  });

  it("prints time, level, message and the fields that matter, with control characters escaped", () => {
    const line = JSON.stringify({
      level: 40,
      time: Date.UTC(2026, 0, 2, 3, 4, 5),
      pid: 1,
      hostname: "h",
      name: "oculus",
      msg: "mode change\u001b[2J",
      mode: "postgres",
      cause: "Redis unreachable",
      n: 3,
    });
    expect(prettyLine(line)).toBe(
      '03:04:05  WARN   mode change\\x1b[2J  mode=postgres  cause="Redis unreachable"  n=3',
    );
    expect(prettyLine("not json")).toBe("not json");
  });
});
