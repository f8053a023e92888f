import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeScore, encodeScore, PRIORITY_MAX, PRIORITY_MIN, SEQ_MAX } from "../../src/core/score.js";

describe("dispatch score", () => {
  it("stays an exact integer below 2^53 at every bound", () => {
    for (const priority of [PRIORITY_MIN, 0, PRIORITY_MAX]) {
      for (const seq of [1, 2, SEQ_MAX - 1, SEQ_MAX]) {
        const score = encodeScore(priority, seq);
        expect(Number.isSafeInteger(score)).toBe(true);
        expect(decodeScore(score)).toEqual({ priority, seq });
      }
    }
  });

  it("orders higher priority first, then lower sequence (older submit) first", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: PRIORITY_MIN, max: PRIORITY_MAX }),
        fc.integer({ min: 1, max: SEQ_MAX }),
        fc.integer({ min: PRIORITY_MIN, max: PRIORITY_MAX }),
        fc.integer({ min: 1, max: SEQ_MAX }),
        (p1, s1, p2, s2) => {
          const a = encodeScore(p1, s1);
          const b = encodeScore(p2, s2);
          const expected = p1 !== p2 ? p2 - p1 : s1 - s2; // negative: a first
          expect(Math.sign(a - b)).toBe(Math.sign(expected));
          // The double conversion Redis applies keeps the value exact.
          expect(Number.parseFloat(a.toString())).toBe(a);
        },
      ),
    );
  });

  it("does not let an old build of a lower priority outrun a newer build of a higher one", () => {
    // The old platform's -priority*1e6 - timestamp let a timestamp outweigh a priority step.
    expect(encodeScore(1, SEQ_MAX)).toBeLessThan(encodeScore(0, 1));
  });

  it("refuses values outside the documented bounds", () => {
    expect(() => encodeScore(1001, 1)).toThrow(RangeError);
    expect(() => encodeScore(-1001, 1)).toThrow(RangeError);
    expect(() => encodeScore(0.5, 1)).toThrow(RangeError);
    expect(() => encodeScore(0, 0)).toThrow(RangeError);
    expect(() => encodeScore(0, SEQ_MAX + 1)).toThrow(RangeError);
  });
});
