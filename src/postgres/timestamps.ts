/**
 * A faster parser for `timestamptz` text. Every build row carries up to seven timestamps, and a
 * claim or a completion returns whole rows: with `pg`'s regular-expression parser, dates were the
 * largest single cost of reading a result on the benchmark's processing path. PostgreSQL prints
 * timestamptz as `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM]`; that shape is read by position, and
 * anything else (infinity, BC dates, years beyond 9999, offsets with seconds) goes to the regular
 * parser, so the result is always the same Date.
 */

type TimestampParser = (text: string) => Date | number | null;

const ZERO = 48;

/** The value of the digits text[from..to), or NaN when one is not a digit. */
function digits(text: string, from: number, to: number): number {
  let value = 0;
  for (let i = from; i < to; i++) {
    const d = text.charCodeAt(i) - ZERO;
    if (d < 0 || d > 9) return Number.NaN;
    value = value * 10 + d;
  }
  return value;
}

/** Milliseconds east of UTC of an offset `±HH` or `±HH:MM` starting at `at`; NaN when it is not one. */
function offsetMs(text: string, at: number): number {
  const sign = text[at] === "+" ? 1 : text[at] === "-" ? -1 : 0;
  const rest = text.length - at;
  if (sign === 0 || (rest !== 3 && !(rest === 6 && text[at + 3] === ":"))) return Number.NaN;
  const minutes = digits(text, at + 1, at + 3) * 60 + (rest === 6 ? digits(text, at + 4, at + 6) : 0);
  return sign * minutes * 60_000;
}

/** Reads the common shape by position; null when `text` has another shape. */
export function parseTimestampFast(text: string): Date | null {
  if (text.length < 22 || text[4] !== "-" || text[7] !== "-" || text[10] !== " " || text[13] !== ":")
    return null;
  if (text[16] !== ":") return null;
  let at = 19;
  let ms = 0;
  if (text[at] === ".") {
    let end = at + 1;
    while (end < text.length && text.charCodeAt(end) >= ZERO && text.charCodeAt(end) <= ZERO + 9) end++;
    const places = end - at - 1;
    if (places === 0 || places > 6) return null;
    // Cut to whole milliseconds, as Date does with pg's 1000 * 0.ffffff.
    ms = Math.floor((digits(text, at + 1, end) * 10 ** (6 - places)) / 1000);
    at = end;
  }
  const offset = offsetMs(text, at);
  const year = digits(text, 0, 4);
  const utc = Date.UTC(
    year,
    digits(text, 5, 7) - 1,
    digits(text, 8, 10),
    digits(text, 11, 13),
    digits(text, 14, 16),
    digits(text, 17, 19),
    ms,
  );
  // Years below 100 are taken as 19xx by Date.UTC: leave them (and any NaN) to the regular parser.
  if (year < 100 || Number.isNaN(utc) || Number.isNaN(offset)) return null;
  return new Date(utc - offset);
}

/** The parser to register for timestamptz: the fast path, else `fallback` (pg's own). */
export function timestampParser(fallback: TimestampParser): (text: string) => Date | number | null {
  return (text) => parseTimestampFast(text) ?? fallback(text);
}
