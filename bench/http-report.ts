/** The readable tables and the targets of the HTTP part (bench/http.ts). */
import { HTTP_MODES, type HttpMode, type HttpPart, type HttpRun, type ServerStats } from "./http.js";
import { fmt, table } from "./text.js";

const LABELS: Record<HttpMode, string> = {
  redis: "Redis mode",
  postgres: "PostgreSQL-only",
};

const cpu = (s: ServerStats) => `${fmt((s.cpuMs / s.wallMs) * 100)} %`;
const loop = (s: ServerStats) => `${fmt(s.loop.eventLoopUtilization * 100)} %`;
const machine = (s: ServerStats) => `${fmt(s.machineCpuPct)} %`;
const bench = (s: ServerStats) => `${fmt((s.benchCpuMs / s.wallMs) * 100)} %`;
const loadText = (l: number[]) => l.map((v) => v.toFixed(2)).join("/");

export function httpTargets(h: HttpPart): { target: string; measured: string; met: boolean }[] {
  const targets: { target: string; measured: string; met: boolean }[] = [];
  for (const mode of HTTP_MODES) {
    const x = h.results[mode];
    if (!x) continue;
    const label = LABELS[mode];
    for (const s of x.submit) {
      const r = s.http;
      targets.push({
        target: `${label}: HTTP submit at ${s.concurrency} connections loses and doubles nothing (each 201's build in PostgreSQL, once; other rows only for requests in flight at the stop)`,
        measured: `${fmt(r.statuses["201"] ?? 0)} x 201, ${fmt(r.check.rows)} rows (${fmt(r.check.unanswered)} without a 201; ${fmt(r.inFlightAtStop)} in flight at the stop), lost ${r.check.lost}, doubled ${r.check.doubled}, non-2xx ${fmt(r.non2xx)}, errors ${fmt(r.errors)}`,
        met: r.check.ok && r.non2xx === 0 && r.errors === 0 && r.check.unanswered <= r.inFlightAtStop,
      });
    }
    for (const e of x.sse) {
      targets.push({
        target: `${label}: SSE, ${fmt(e.connections)} streams, ${e.rate} updates/s: every update to every stream once (latency reported, no threshold)`,
        measured: `${fmt(e.delivered)} of ${fmt(e.expected)} deliveries, ${fmt(e.missing)} missing, ${fmt(e.duplicates)} duplicates, ${e.failed + e.endedEarly} streams failed or ended; p50 ${fmt(e.ms.p50, 1)} ms, p99 ${fmt(e.ms.p99, 1)} ms`,
        met: e.missing === 0 && e.duplicates === 0 && e.foreign === 0 && e.failed === 0 && e.endedEarly === 0,
      });
    }
  }
  return targets;
}

export function renderHttp(out: string[], h: HttpPart): void {
  const modes = HTTP_MODES.filter((m) => h.results[m]);
  out.push(
    "",
    `7. HTTP API. Server: buildServer + listenApi in a child process (auth on, one bearer token; rate limit off; request logging at info to a file; reaper on; no workers). Load: ${h.loadGenerator}. Submit and read: ${h.seconds} s per measurement after ${h.warmupSeconds} s warm-up, closed loop (one request in flight per connection); each submit measurement on a fresh schema; library = the same call on the same queue options in the server process, no HTTP. Server CPU from /proc (% of one core), event loop = its utilization; machine CPU = all processes (/proc/stat), 100 % per core`,
  );
  const run = (x: HttpRun) => [
    fmt(x.perSec),
    fmt(x.ms.p50, 2),
    fmt(x.ms.p99, 2),
    fmt(x.ms.max, 1),
    fmt(x.non2xx),
    fmt(x.errors),
    cpu(x.server),
    loop(x.server),
    bench(x.server),
    machine(x.server),
  ];
  const submits = modes.flatMap((m) => (h.results[m]?.submit ?? []).map((s) => [m, s] as const));
  if (submits.length > 0) {
    out.push(
      table(
        [
          "mode",
          "conns",
          "HTTP submit/s",
          "p50 ms",
          "p99 ms",
          "max ms",
          "non-2xx",
          "errors",
          "server CPU",
          "event loop",
          "autocannon CPU",
          "machine CPU",
          "library submit/s",
          "lib p50 ms",
          "lib p99 ms",
          "lib CPU",
          "lib machine CPU",
          "HTTP / library",
        ],
        submits.map(([m, s]) => [
          LABELS[m],
          String(s.concurrency),
          ...run(s.http),
          fmt(s.library.perSec),
          fmt(s.library.ms.p50, 2),
          fmt(s.library.ms.p99, 2),
          cpu(s.library.server),
          machine(s.library.server),
          fmt(s.http.perSec / s.library.perSec, 2),
        ]),
      ),
    );
    out.push(
      table(
        [
          "mode",
          "conns",
          "201s",
          "rows in PostgreSQL",
          "rows without a 201",
          "in flight at stop",
          "lost",
          "doubled",
          "queued at end",
          "library rows / calls",
        ],
        submits.map(([m, s]) => [
          LABELS[m],
          String(s.concurrency),
          fmt(s.http.statuses["201"] ?? 0),
          fmt(s.http.check.rows),
          fmt(s.http.check.unanswered),
          fmt(s.http.inFlightAtStop),
          String(s.http.check.lost),
          String(s.http.check.doubled),
          fmt(s.http.queuedAtEnd),
          `${fmt(s.library.check.rows)} / ${fmt(s.library.calls)}`,
        ]),
      ),
    );
  }
  const reads = modes.flatMap((m) => (h.results[m]?.read ?? []).map((s) => [m, s] as const));
  if (reads.length > 0) {
    out.push(
      table(
        [
          "mode",
          "conns",
          "queued",
          "HTTP GET /v1/builds/:id /s",
          "p50 ms",
          "p99 ms",
          "max ms",
          "non-2xx",
          "errors",
          "server CPU",
          "event loop",
          "autocannon CPU",
          "machine CPU",
          "library get+position /s",
          "lib p50 ms",
          "lib p99 ms",
          "lib CPU",
          "lib machine CPU",
          "HTTP / library",
        ],
        reads.map(([m, s]) => [
          LABELS[m],
          String(s.concurrency),
          fmt(s.queued),
          ...run(s.http),
          fmt(s.library.perSec),
          fmt(s.library.ms.p50, 2),
          fmt(s.library.ms.p99, 2),
          cpu(s.library.server),
          machine(s.library.server),
          fmt(s.http.perSec / s.library.perSec, 2),
        ]),
      ),
    );
  }
  const sse = modes.flatMap((m) => (h.results[m]?.sse ?? []).map((s) => [m, s] as const));
  const first = sse[0]?.[1];
  if (first) {
    out.push(
      `   SSE fan-out: ${fmt(first.connections)} GET /v1/events streams from ${first.clients} client process(es); progress updates from a producer process over ${first.builds} running builds (each build at rate/${first.builds} per second); ${first.seconds} s measured after ${first.warmupSeconds} s warm-up; latency = send in the producer -> receive in a client process`,
    );
    const two = (d: { p50: number; p99: number }) => `${fmt(d.p50, 2)} / ${fmt(d.p99, 2)}`;
    out.push(
      table(
        [
          "mode",
          "updates/s",
          "p50 ms",
          "p95 ms",
          "p99 ms",
          "max ms",
          "mean ms",
          "first delivery p50/p99",
          "spread p50/p99",
          "producer call p50/p99",
          "/health p50/max ms",
        ],
        sse.map(([m, s]) => [
          LABELS[m],
          String(s.rate),
          ...[s.ms.p50, s.ms.p95, s.ms.p99, s.ms.max, s.ms.mean].map((v) => fmt(v, 2)),
          two(s.firstMs),
          two(s.spreadMs),
          two(s.producer.callMs),
          `${fmt(s.health.ms.p50, 1)} / ${fmt(s.health.ms.max, 1)}`,
        ]),
      ),
    );
    out.push(
      table(
        [
          "mode",
          "updates/s",
          "updates (achieved/s)",
          "delivered / due",
          "missing",
          "duplicates",
          "failed/ended",
          "by last send",
          "drain ms",
          "server CPU",
          "event loop",
          "machine CPU",
          "server RSS before -> attached -> max MiB",
          "client CPU",
          "attach s",
        ],
        sse.map(([m, s]) => [
          LABELS[m],
          String(s.rate),
          `${fmt(s.updates)} (${fmt(s.achievedRatePerSec, 1)})`,
          `${fmt(s.delivered)} / ${fmt(s.expected)}`,
          `${fmt(s.missing)}${s.streamsMissing ? ` (${s.streamsMissing} streams)` : ""}`,
          `${fmt(s.duplicates)}${s.streamsWithDuplicates ? ` (${s.streamsWithDuplicates} streams)` : ""}`,
          `${s.failed}/${s.endedEarly}`,
          `${fmt((s.deliveredBySendEnd / s.expected) * 100, 1)} %`,
          fmt(s.drainedMs),
          cpu(s.server),
          loop(s.server),
          machine(s.server),
          `${fmt(s.serverAttach.rssStartMiB)} -> ${fmt(s.serverAttach.rssEndMiB)} -> ${fmt(s.server.rssMaxMiB)}`,
          s.clientProcesses.map((c) => `${fmt((c.cpuMs / c.wallMs) * 100)} %`).join(", "),
          fmt(s.attachSec, 1),
        ]),
      ),
    );
    out.push(
      "   first delivery: per update, send -> its first receive on any stream; spread: its first -> last receive over all streams (the server's fan-out plus the clients' reads); by last send: share of the due deliveries received when the producer's last call settled; drain: from then to the last delivery; /health: GET /health every 250 ms during the measured window",
    );
    for (const [m, s] of sse) {
      if (s.errors.length > 0)
        out.push(`   ${LABELS[m]} ${s.rate}/s stream errors: ${s.errors.slice(0, 3).join("; ")}`);
      if (s.health.failures > 0 || Object.keys(s.health.statuses).some((k) => k !== "200")) {
        out.push(
          `   ${LABELS[m]} ${s.rate}/s /health: ${JSON.stringify(s.health.statuses)}, ${s.health.failures} failed`,
        );
      }
    }
  }
  for (const m of modes) {
    for (const l of h.results[m]?.serverLogs ?? []) {
      const ended = Object.entries(l.streamsEnded).map(([k, v]) => `${fmt(v)} ${k}`);
      const statuses = Object.entries(l.statuses).map(([k, v]) => `${k}: ${fmt(v)}`);
      out.push(
        `   server log, ${LABELS[m]}, ${l.label}: ${fmt(l.lines)} lines, ${l.warnings} warnings, ${l.errors} errors; responses ${statuses.join(", ") || "-"}${ended.length ? `; streams ended: ${ended.join(", ")}` : ""}${l.messages.length ? `; ${l.messages.join(" | ")}` : ""}`,
      );
    }
  }
  out.push(
    `   load average 1/5/15: ${modes
      .map((m) => {
        const l = h.results[m]?.loadAverage;
        return l ? `${LABELS[m]} ${loadText(l.start)} -> ${loadText(l.end)}` : "";
      })
      .join("; ")}`,
  );
}
