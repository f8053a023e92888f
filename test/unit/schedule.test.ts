/**
 * Schedules' pure parts (src/core/schedule.ts): validation naming the field, the missed-ticks policy
 * (the most recent due tick, the older ones counted), DST as cron-parser reads it, and the tick key.
 */
import { describe, expect, it } from "vitest";
import {
  dueTick,
  MAX_MISSED_COUNT,
  nextTickAfter,
  parseScheduleInput,
  parseTimezone,
  tickKey,
} from "../../src/core/schedule.js";
import { PayloadTooLargeError, ValidationError } from "../../src/index.js";

function refusal(input: unknown): ValidationError {
  try {
    parseScheduleInput(input);
  } catch (err) {
    if (err instanceof ValidationError) return err;
    throw err;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

const base = { name: "nightly", cron: "0 2 * * *", strategyId: "momentum" };

describe("schedule validation", () => {
  it("takes a minimal schedule, with UTC as the explicit default zone", () => {
    const s = parseScheduleInput(base);
    expect(s).toMatchObject({ timezone: "UTC", priority: 0, params: {}, requires: {}, paused: false });
    expect(s.maxRetries).toBe(3);
    expect(parseScheduleInput({ ...base, cron: "*/5 * * * * *", timezone: "europe/berlin" }).timezone).toBe(
      "Europe/Berlin",
    );
    expect(parseScheduleInput({ ...base, cron: "@daily" }).cron).toBe("@daily");
    expect(parseScheduleInput({ ...base, cron: "0 9 * * mon,thu,sat" }).cron).toBe("0 9 * * mon,thu,sat");
  });

  it("names the field and why for a bad cron expression", () => {
    const cases: [string, RegExp][] = [
      ["61 * * * *", /cron: "61 \* \* \* \*" is not a valid cron expression: .*61/],
      ["* * *", /has 3 field\(s\)/],
      ["", /has 0 field\(s\)/],
      ["* * * * * * *", /has 7 field\(s\)/],
      ["a b c d e", /not a valid cron expression/],
      ["0 0 31 2 *", /not a valid cron expression/],
      ["H * * * *", /H \(hashed values\)/],
      ["@fortnightly", /unknown alias/],
    ];
    for (const [cron, message] of cases) {
      const err = refusal({ ...base, cron });
      expect(err.field).toBe("cron");
      expect(err.message).toMatch(message);
    }
  });

  it("names the field for a bad zone, name, params key or unknown field", () => {
    expect(refusal({ ...base, timezone: "Mars/Olympus" }).message).toMatch(
      /^timezone: "Mars\/Olympus" is not an IANA time zone name/,
    );
    expect(refusal({ ...base, timezone: "+02:00" }).field).toBe("timezone");
    expect(refusal({ ...base, timezone: "" }).field).toBe("timezone");
    for (const name of ["", "a b", "-x", "x/y", "é", "a\u001b[2J", "x".repeat(101)]) {
      expect(refusal({ ...base, name }).field).toBe("name");
    }
    expect(refusal({ ...base, params: { schedule: 1 } }).field).toBe("params.schedule");
    expect(refusal({ ...base, strategyId: "" }).field).toBe("strategyId");
    expect(refusal({ ...base, priority: 5000 }).field).toBe("priority");
    expect(refusal({ ...base, requires: { "bad key": "x" } }).field).toMatch(/^requires/);
    expect(refusal({ ...base, cronn: "x" }).field).toBe("cronn");
    expect(refusal({ name: "x", strategyId: "s" }).field).toBe("cron");
    expect(() => parseScheduleInput({ ...base, params: { big: "x".repeat(100 * 1024) } })).toThrow(
      PayloadTooLargeError,
    );
  });

  it("canonicalises zone names", () => {
    expect(parseTimezone("utc")).toBe("UTC");
    expect(parseTimezone("America/New_York")).toBe("America/New_York");
  });
});

describe("ticks", () => {
  const at = (iso: string) => new Date(iso);

  it("submits the most recent due tick and counts the older ones (missed-ticks policy)", () => {
    // Due since 10:00, now 10:05:30: ticks 10:00 .. 10:05 are due; 10:05 runs, five are missed.
    const due = dueTick("* * * * *", "UTC", at("2026-01-01T10:00:00Z"), at("2026-01-01T10:05:30Z"));
    expect(due.tick.toISOString()).toBe("2026-01-01T10:05:00.000Z");
    expect(due.missed).toBe(5);
    expect(due.next.toISOString()).toBe("2026-01-01T10:06:00.000Z");
    // On time: nothing missed, even exactly on the tick.
    const onTime = dueTick("* * * * *", "UTC", at("2026-01-01T10:00:00Z"), at("2026-01-01T10:00:00Z"));
    expect(onTime).toMatchObject({ missed: 0 });
    expect(onTime.tick.toISOString()).toBe("2026-01-01T10:00:00.000Z");
    expect(onTime.next.toISOString()).toBe("2026-01-01T10:01:00.000Z");
  });

  it("bounds the count of missed ticks", () => {
    const due = dueTick("* * * * * *", "UTC", at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"));
    expect(due.missed).toBe(MAX_MISSED_COUNT);
    expect(due.tick.toISOString()).toBe("2026-01-02T00:00:00.000Z");
  });

  it("reads the expression in the schedule's zone, DST included (as documented)", () => {
    // 02:30 every day in Berlin. 2026-03-29: 02:30 does not exist (clocks go 02:00 -> 03:00): the
    // tick is at 03:30 CEST (01:30Z), once. 2026-10-25: 02:30 happens twice: one tick, the first.
    const tz = "Europe/Berlin";
    expect(nextTickAfter("30 2 * * *", tz, at("2026-03-28T12:00:00Z")).toISOString()).toBe(
      "2026-03-29T01:30:00.000Z",
    );
    expect(nextTickAfter("30 2 * * *", tz, at("2026-03-29T01:30:00Z")).toISOString()).toBe(
      "2026-03-30T00:30:00.000Z",
    );
    expect(nextTickAfter("30 2 * * *", tz, at("2026-10-24T12:00:00Z")).toISOString()).toBe(
      "2026-10-25T00:30:00.000Z",
    );
    expect(nextTickAfter("30 2 * * *", tz, at("2026-10-25T00:30:00Z")).toISOString()).toBe(
      "2026-10-26T01:30:00.000Z",
    );
    // Every 30 minutes: no 02:xx on the spring day (01:30 CET, then 03:00 CEST); both passes of the
    // repeated hour in autumn (02:00 and 02:30 CEST, then 02:00 and 02:30 CET).
    const halfHours = (from: string, n: number) => {
      const out: string[] = [];
      let t = at(from);
      for (let i = 0; i < n; i++) {
        t = nextTickAfter("*/30 * * * *", tz, t);
        out.push(t.toISOString().slice(11, 16));
      }
      return out;
    };
    expect(halfHours("2026-03-29T00:10:00Z", 3)).toEqual(["00:30", "01:00", "01:30"]);
    expect(halfHours("2026-10-24T23:50:00Z", 5)).toEqual(["00:00", "00:30", "01:00", "01:30", "02:00"]);
    // Winter: 08:00 Berlin is 07:00Z; summer: 06:00Z.
    expect(nextTickAfter("0 8 * * *", tz, at("2026-01-10T00:00:00Z")).toISOString()).toBe(
      "2026-01-10T07:00:00.000Z",
    );
    expect(nextTickAfter("0 8 * * *", tz, at("2026-07-10T00:00:00Z")).toISOString()).toBe(
      "2026-07-10T06:00:00.000Z",
    );
  });

  it("keys a tick by schedule and time", () => {
    expect(tickKey("nightly", at("2026-01-01T02:00:00Z"))).toBe("schedule:nightly:2026-01-01T02:00:00.000Z");
  });
});
