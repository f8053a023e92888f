/**
 * The load generator: submits builds over HTTP (POST /v1/builds) at a target rate, round-robin over
 * the APIs, as the platform's web app would. Each request carries an idempotency key; a request that
 * never reached an API (connection refused or reset) is sent once more, with the same key, to the
 * other API: the client-side failover of a load balancer. A build counts as acknowledged only on a
 * 201 or 200 with its id; anything else (503, a timeout, a 500) is a refused submit, counted by kind:
 * not acknowledged, so the queue owes nothing for it.
 */
import { randomUUID } from "node:crypto";

export interface Ack {
  id: string;
  /** Wall clock when the acknowledgement arrived. */
  at: number;
}

export interface LoadStats {
  acks: Ack[];
  /** Not acknowledged, by kind: "503", "500", "timeout", "connection", "in-flight cap", ... */
  refused: Record<string, number>;
  sent: number;
}

const REQUEST_TIMEOUT_MS = 10_000;
/** More requests than this in flight (an API that stalls) and new ones are skipped, and counted. */
const MAX_IN_FLIGHT = 200;

export class LoadGenerator {
  readonly stats: LoadStats = { acks: [], refused: {}, sent: 0 };
  private ratePerSec = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = 0;
  private next = 0;
  private owed = 0;
  private lastTick = 0;
  private readonly pending = new Set<Promise<void>>();
  /** Until when an API that refused a connection is skipped (ms). */
  private readonly downUntil: number[];

  constructor(
    private readonly apiUrls: string[],
    private readonly strategyId: string,
  ) {
    this.downUntil = apiUrls.map(() => 0);
  }

  /** Starts submitting (or changes the rate): `ratePerSec` builds a second, evenly spread. */
  setRate(ratePerSec: number): void {
    this.ratePerSec = ratePerSec;
    if (this.timer) return;
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.tick(), 10);
  }

  /** Stops submitting and waits for the requests in flight. */
  async stop(): Promise<LoadStats> {
    clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([...this.pending]);
    return this.stats;
  }

  /** Submits `count` builds at once (the calibration backlog), `concurrency` requests at a time. */
  async burst(count: number, concurrency = 20): Promise<void> {
    let left = count;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left > 0) {
          left -= 1;
          await this.submit();
        }
      }),
    );
  }

  private tick(): void {
    const now = performance.now();
    this.owed += ((now - this.lastTick) / 1000) * this.ratePerSec;
    this.lastTick = now;
    while (this.owed >= 1) {
      this.owed -= 1;
      if (this.inFlight >= MAX_IN_FLIGHT) {
        this.count("in-flight cap");
        continue;
      }
      const request = this.submit().finally(() => this.pending.delete(request));
      this.pending.add(request);
    }
  }

  private count(kind: string): void {
    this.stats.refused[kind] = (this.stats.refused[kind] ?? 0) + 1;
  }

  private pickApi(exclude?: number): number | undefined {
    const now = Date.now();
    for (let i = 0; i < this.apiUrls.length; i++) {
      const index = (this.next + i) % this.apiUrls.length;
      if (index === exclude || (this.downUntil[index] ?? 0) > now) continue;
      this.next = index + 1;
      return index;
    }
    // Every API looks down: try the next one anyway (it may be back).
    const index = this.next % this.apiUrls.length;
    this.next = index + 1;
    return index === exclude ? undefined : index;
  }

  private async submit(): Promise<void> {
    this.inFlight += 1;
    this.stats.sent += 1;
    const key = randomUUID();
    try {
      const first = this.pickApi();
      if (first === undefined) return;
      const outcome = await this.post(first, key);
      if (outcome !== "connection") return;
      this.downUntil[first] = Date.now() + 1000;
      const second = this.pickApi(first);
      if (second === undefined) {
        this.count("connection");
        return;
      }
      if ((await this.post(second, key)) === "connection") {
        this.downUntil[second] = Date.now() + 1000;
        this.count("connection");
      }
    } finally {
      this.inFlight -= 1;
    }
  }

  /** One POST; "connection" when it never reached the API (the caller may try the other one). */
  private async post(api: number, idempotencyKey: string): Promise<"done" | "connection"> {
    let res: Response;
    try {
      res = await fetch(`${this.apiUrls[api]}/v1/builds`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ strategyId: this.strategyId, maxRetries: 3, idempotencyKey }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      if (isTimeout(err)) {
        this.count("timeout");
        return "done";
      }
      return "connection";
    }
    if (res.status === 201 || res.status === 200) {
      const body = (await res.json().catch(() => ({}))) as { build?: { id?: string } };
      if (body.build?.id) {
        this.stats.acks.push({ id: body.build.id, at: Date.now() });
        return "done";
      }
      this.count(`${res.status} without a build`);
      return "done";
    }
    await res.arrayBuffer().catch(() => undefined);
    this.count(String(res.status));
    return "done";
  }
}

function isTimeout(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return name === "TimeoutError" || name === "AbortError";
}
