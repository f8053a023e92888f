/**
 * The timestamptz parser (src/postgres/timestamps.ts) against PostgreSQL itself: whatever the
 * session's time zone and the value's precision, the Date read is the instant PostgreSQL holds, to
 * the millisecond (cut, not rounded, like pg's own parser), and shapes the fast path does not know go
 * to pg's parser.
 */
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/core/logger.js";
import { openPostgres } from "../../src/postgres/db.js";
import { parseTimestampFast } from "../../src/postgres/timestamps.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";

// Zones with whole-hour, half-hour, negative and historical (seconds) offsets.
const ZONES = ["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati", "America/Los_Angeles"];

describe("timestamptz parsing", () => {
  let client: pg.Client;

  beforeAll(async () => {
    // Opening a Db registers the parser on pg's shared type table.
    const db = await openPostgres(TEST_DATABASE_URL, "public", silentLogger());
    await db.close();
    client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
  });

  afterAll(async () => {
    await client.end();
  });

  it("reads the instant PostgreSQL holds, in every session time zone", async () => {
    const instants = fc.sample(
      fc
        .integer({ min: Date.UTC(1970, 0, 1), max: Date.UTC(2200, 0, 1) })
        .chain((ms) => fc.tuple(fc.constant(ms), fc.integer({ min: 0, max: 999 }))),
      200,
    );
    for (const zone of ZONES) {
      await client.query(`SET TimeZone = '${zone}'`);
      const { rows } = await client.query<{ t: Date; ms: string; text: string }>(
        `SELECT x.t, x.t::text AS text, floor(e.s / 1000.0)::bigint::text AS ms
         FROM unnest($1::bigint[]) AS e(s),
              LATERAL (SELECT 'epoch'::timestamptz + e.s * interval '1 microsecond' AS t) AS x`,
        [instants.map(([ms, micros]) => ms * 1000 + micros)],
      );
      for (const row of rows) {
        expect(row.t).toBeInstanceOf(Date);
        expect(row.t.getTime(), `${zone}: ${row.text}`).toBe(Number(row.ms));
      }
    }
  });

  it("takes the fast path for PostgreSQL's usual output and leaves other shapes to pg", () => {
    expect(parseTimestampFast("2026-12-03 09:15:00.123456+00")?.toISOString()).toBe(
      "2026-12-03T09:15:00.123Z",
    );
    expect(parseTimestampFast("2026-12-03 09:15:00+05:30")?.toISOString()).toBe("2026-12-03T03:45:00.000Z");
    expect(parseTimestampFast("2026-12-03 09:15:00.5-08")?.toISOString()).toBe("2026-12-03T17:15:00.500Z");
    for (const other of [
      "infinity",
      "-infinity",
      "0050-01-01 00:00:00+00",
      "12026-12-03 09:15:00+00",
      "2026-12-03 09:15:00+00 BC",
      "1850-01-01 00:00:00+00:53:28",
      "2026-12-03T09:15:00Z",
      "2026-12-03 09:15:00.1234567+00",
      "2026-1x-03 09:15:00+00",
    ]) {
      expect(parseTimestampFast(other), other).toBeNull();
    }
  });

  it("reads values the fast path leaves alone as pg does", async () => {
    await client.query("SET TimeZone = 'UTC'");
    const { rows } = await client.query<{ inf: unknown; bc: Date; old: Date; lmt: Date }>(
      `SELECT 'infinity'::timestamptz AS inf, '0044-03-15 12:00:00+00 BC'::timestamptz AS bc,
              '0050-01-01 00:00:00+00'::timestamptz AS old`,
    );
    expect(rows[0]?.inf).toBe(Number.POSITIVE_INFINITY);
    expect(rows[0]?.bc.getUTCFullYear()).toBe(-43);
    expect(rows[0]?.old.toISOString()).toBe("0050-01-01T00:00:00.000Z");
    // A zone whose historical offset has seconds (local mean time) goes to pg's parser too.
    await client.query("SET TimeZone = 'Europe/Amsterdam'");
    const lmt = await client.query<{ t: Date; ms: string }>(
      `SELECT '1900-01-01 00:00:00+00'::timestamptz AS t,
              (extract(epoch FROM '1900-01-01 00:00:00+00'::timestamptz) * 1000)::bigint::text AS ms`,
    );
    expect(lmt.rows[0]?.t.getTime()).toBe(Number(lmt.rows[0]?.ms));
  });
});
