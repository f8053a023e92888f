/**
 * A CLIENT process of the HTTP benchmark's SSE fan-out (bench/http.ts starts one or more as
 * `node dist/bench/http-sse-client.js --url URL --token T --connections N --total T --measured-from M
 * --out FILE`): N concurrent `GET /v1/events` streams (raw node:http, one socket each, no agent
 * pooling), like N browser tabs (with auth on, a browser reads the stream with fetch, as
 * docs/http-api.md says).
 *
 * The streams are opened in batches of 50; each counts as attached once its `snapshot` frame has
 * arrived. Every `progress` frame is parsed just enough for the update's sequence number
 * (`progress.iteration`) and its send time (`progress.message`, put there by bench/fanout-producer.ts);
 * the receive time is taken when the chunk holding it is read (timeOrigin + performance.now(), the
 * producer's clock). Per stream, per update: deliveries are counted, so missing and duplicate
 * deliveries are exact; latencies of the measured updates (seq >= measured-from) are kept.
 *
 * Protocol, one line each. stdout: `attached <ms> <failed>` (all streams attached, or failed),
 * `status <delivered> <expected>`, `done <json>` (ClientReport; the latencies go to FILE as raw
 * little-endian float64). stdin: `mark` (start of the measured window: CPU and event-loop baseline),
 * `status`, `finish` (close the streams and report). Exits when its stdin closes.
 */
import { writeFileSync } from "node:fs";
import http from "node:http";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    connections: { type: "string" },
    total: { type: "string" },
    "measured-from": { type: "string" },
    out: { type: "string" },
    batch: { type: "string", default: "50" },
  },
});

export interface ClientReport {
  connections: number;
  /** Streams that answered 200 and sent their snapshot. */
  attached: number;
  /** Streams that failed to open, or ended before `finish`, with the first few reasons. */
  failed: number;
  endedEarly: number;
  errors: string[];
  /** Distinct (stream, measured update) deliveries. */
  delivered: number;
  expected: number;
  missing: number;
  duplicates: number;
  /** Progress frames with a sequence number outside the run, or unparseable. */
  foreign: number;
  streamsMissing: number;
  streamsWithDuplicates: number;
  /** Per update (index = seq): send time, first and last receive time across this process's streams. */
  sentAt: (number | null)[];
  firstAt: (number | null)[];
  lastAt: (number | null)[];
  frames: number;
  bytes: number;
  /** This process over the measured window (mark .. finish). */
  cpuMs: number;
  wallMs: number;
  eventLoopUtilization: number;
  attachMs: number;
}

const say = (line: string) => process.stdout.write(`${line}\n`);
const now = () => performance.timeOrigin + performance.now();

const url = new URL(args.url ?? "");
const token = args.token ?? "";
const connections = Number(args.connections);
const total = Number(args.total);
const measuredFrom = Number(args["measured-from"]);
const batch = Number(args.batch);
const out = args.out ?? "";
const measured = total - measuredFrom;

const counts = Array.from({ length: connections }, () => new Uint8Array(total));
const latencies = new Float64Array(connections * measured);
let latencyCount = 0;
const sentAt = new Float64Array(total).fill(Number.NaN);
const firstAt = new Float64Array(total).fill(Number.POSITIVE_INFINITY);
const lastAt = new Float64Array(total).fill(Number.NEGATIVE_INFINITY);
let delivered = 0;
let foreign = 0;
let frames = 0;
let bytes = 0;
let failed = 0;
let endedEarly = 0;
let attached = 0;
const errors: string[] = [];
const requests: http.ClientRequest[] = [];
let finishing = false;
let attachMs = 0;

function noteError(text: string): void {
  if (errors.length < 10) errors.push(text);
}

/** Reads the number after `key` in `frame` (from `from`), or NaN. */
function numberAfter(frame: string, key: string, from: number): number {
  const at = frame.indexOf(key, from);
  if (at < 0) return Number.NaN;
  let end = at + key.length;
  while (end < frame.length) {
    const c = frame.charCodeAt(end);
    if ((c >= 48 && c <= 57) || c === 46 || c === 45) end += 1;
    else break;
  }
  return Number(frame.slice(at + key.length, end));
}

function onProgress(stream: number, frame: string, at: number): void {
  const seq = numberAfter(frame, '"iteration":', 0);
  const sent = numberAfter(frame, '"message":"', 0);
  if (!Number.isInteger(seq) || seq < 0 || seq >= total || !Number.isFinite(sent)) {
    foreign += 1;
    return;
  }
  const c = counts[stream] as Uint8Array;
  const n = c[seq] ?? 0;
  if (n < 255) c[seq] = n + 1;
  if (n > 0 || seq < measuredFrom) return;
  delivered += 1;
  latencies[latencyCount++] = at - sent;
  sentAt[seq] = sent;
  if (at < (firstAt[seq] ?? 0)) firstAt[seq] = at;
  if (at > (lastAt[seq] ?? 0)) lastAt[seq] = at;
}

/** Opens stream `i`; resolves when its snapshot arrived (or it failed). */
function open(i: number): Promise<void> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = () => {
      if (!settled) {
        settled = true;
        resolve();
      }
    };
    const req = http.get(
      url,
      { agent: false, headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } },
      (res) => {
        if (res.statusCode !== 200) {
          failed += 1;
          noteError(`stream ${i}: status ${res.statusCode}`);
          res.resume();
          settle();
          return;
        }
        res.setEncoding("utf8");
        let buffer = "";
        let gotSnapshot = false;
        res.on("data", (chunk: string) => {
          const at = now();
          bytes += chunk.length;
          buffer += chunk;
          let start = 0;
          for (;;) {
            const end = buffer.indexOf("\n\n", start);
            if (end < 0) break;
            const frame = buffer.slice(start, end);
            start = end + 2;
            if (frame.charCodeAt(0) === 58) continue; // ": comment" (stream open, heartbeat)
            frames += 1;
            const ev = frame.indexOf("\nevent: ");
            const evEnd = ev < 0 ? -1 : frame.indexOf("\n", ev + 8);
            const type = ev < 0 ? "" : frame.slice(ev + 8, evEnd < 0 ? undefined : evEnd);
            if (type === "progress") onProgress(i, frame, at);
            else if (type === "snapshot" && !gotSnapshot) {
              gotSnapshot = true;
              attached += 1;
              settle();
            }
          }
          buffer = start === 0 ? buffer : buffer.slice(start);
        });
        res.on("close", () => {
          if (!finishing) {
            endedEarly += 1;
            noteError(`stream ${i}: ended by the server`);
          }
          settle();
        });
      },
    );
    req.on("error", (err) => {
      if (!finishing) {
        failed += 1;
        noteError(`stream ${i}: ${err.message}`);
      }
      settle();
    });
    requests.push(req);
  });
}

let cpuMark = process.cpuUsage();
let wallMark = performance.now();
let eluMark = performance.eventLoopUtilization();

async function attachAll(): Promise<void> {
  const started = performance.now();
  for (let from = 0; from < connections; from += batch) {
    const waits: Promise<void>[] = [];
    for (let i = from; i < Math.min(connections, from + batch); i++) waits.push(open(i));
    await Promise.all(waits);
  }
  attachMs = performance.now() - started;
  say(`attached ${attachMs.toFixed(1)} ${failed}`);
}

function finish(): void {
  finishing = true;
  const cpu = process.cpuUsage(cpuMark);
  const wallMs = performance.now() - wallMark;
  const elu = performance.eventLoopUtilization(eluMark).utilization;
  for (const req of requests) req.destroy();
  let missing = 0;
  let duplicates = 0;
  let streamsMissing = 0;
  let streamsWithDuplicates = 0;
  for (const c of counts) {
    let m = 0;
    let d = 0;
    for (let seq = measuredFrom; seq < total; seq++) {
      const n = c[seq] ?? 0;
      if (n === 0) m += 1;
      else d += n - 1;
    }
    missing += m;
    duplicates += d;
    if (m > 0) streamsMissing += 1;
    if (d > 0) streamsWithDuplicates += 1;
  }
  writeFileSync(out, Buffer.from(latencies.buffer, 0, latencyCount * 8));
  const finite = (a: Float64Array) => Array.from(a, (v) => (Number.isFinite(v) ? v : null));
  const report: ClientReport = {
    connections,
    attached,
    failed,
    endedEarly,
    errors,
    delivered,
    expected: connections * measured,
    missing,
    duplicates,
    foreign,
    streamsMissing,
    streamsWithDuplicates,
    sentAt: finite(sentAt),
    firstAt: finite(firstAt),
    lastAt: finite(lastAt),
    frames,
    bytes,
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs,
    eventLoopUtilization: elu,
    attachMs,
  };
  say(`done ${JSON.stringify(report)}`);
}

createInterface({ input: process.stdin }).on("line", (line) => {
  switch (line.trim()) {
    case "mark":
      cpuMark = process.cpuUsage();
      wallMark = performance.now();
      eluMark = performance.eventLoopUtilization();
      say("ok mark");
      return;
    case "status":
      say(`status ${delivered} ${connections * measured}`);
      return;
    case "finish":
      finish();
      return;
  }
});
process.stdin.on("close", () => {
  finishing = true;
  for (const req of requests) req.destroy();
  process.exit(0);
});

await attachAll();
