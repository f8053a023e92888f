import { describe, expect, it } from "vitest";
import { describeEvent } from "../../src/cli/client-commands.js";

describe("oculus watch: event lines", () => {
  it("puts the retry count before a multi-line error, whose output lines follow on their own", () => {
    const { detail, more } = describeEvent({
      kind: "event",
      id: "7",
      type: "retry_scheduled",
      actor: "w1",
      data: { error: "exit code 1\n--- last output ---\nepoch 3\nTraceback", retryCount: 1 },
    });
    expect(detail).toBe("by w1, retryCount 1, error exit code 1");
    expect(more).toEqual(["--- last output ---", "epoch 3", "Traceback"]);
  });
});
