/**
 * Server-Sent Events: writes a queue event subscription to an HTTP response, one frame per item:
 *
 *   id: <event id>
 *   event: <snapshot | queued | running | progress | ... >
 *   data: <JSON>
 *
 * A browser's EventSource resends the last id it saw as `Last-Event-ID` when it reconnects, and the
 * subscription resumes after it, so nothing is missed. A comment line every heartbeat interval keeps
 * proxies from closing an idle stream. The stream ends when the client goes away, when the
 * subscription ends (a build's stream after its final event), or when the server shuts down.
 */
import type { ServerResponse } from "node:http";
import type { FastifyBaseLogger } from "fastify";
import { TooManyStreamsError } from "../core/errors.js";
import type { StreamItem } from "../core/events.js";
import { toApiBuild, toApiBuildDetail } from "./schemas.js";

/** How long a client refused for too many streams is told to wait (Retry-After). */
export const TOO_MANY_STREAMS_RETRY_AFTER_S = 5;

/**
 * The open streams of a server, so that shutdown can end them all, and how many each client address
 * holds (at most `maxPerAddress`: see stream-limits.ts).
 */
export class StreamRegistry {
  private readonly open = new Map<AbortController, string | undefined>();
  private readonly byAddress = new Map<string, number>();
  private closing = false;

  constructor(private readonly maxPerAddress = Number.POSITIVE_INFINITY) {}

  /**
   * A controller for a new stream of the client at `address` (a key of streamAddressKey); already
   * aborted when the server is shutting down. Throws TooManyStreamsError when the address holds
   * `maxPerAddress` streams already.
   */
  track(address?: string): AbortController {
    const controller = new AbortController();
    if (this.closing) {
      controller.abort();
      return controller;
    }
    if (address !== undefined) {
      const held = this.byAddress.get(address) ?? 0;
      if (held >= this.maxPerAddress) {
        throw new TooManyStreamsError(this.maxPerAddress, TOO_MANY_STREAMS_RETRY_AFTER_S);
      }
      this.byAddress.set(address, held + 1);
    }
    this.open.set(controller, address);
    return controller;
  }

  release(controller: AbortController): void {
    if (!this.open.has(controller)) return;
    const address = this.open.get(controller);
    this.open.delete(controller);
    if (address === undefined) return;
    const held = (this.byAddress.get(address) ?? 1) - 1;
    if (held > 0) this.byAddress.set(address, held);
    else this.byAddress.delete(address);
  }

  get size(): number {
    return this.open.size;
  }

  /** Open streams of one address (key of streamAddressKey). */
  heldBy(address: string): number {
    return this.byAddress.get(address) ?? 0;
  }

  /** How long a stream holds frames after a write (see SSE_WRITES_PER_SECOND). */
  coalesceMs(): number {
    return Math.min(SSE_MAX_COALESCE_MS, (this.open.size * 1000) / SSE_WRITES_PER_SECOND);
  }

  /** Ends every open stream (server shutdown). */
  closeAll(): void {
    this.closing = true;
    for (const controller of this.open.keys()) controller.abort();
    this.open.clear();
    this.byAddress.clear();
  }
}

/**
 * Frames already formatted: the hub hands the same event object to every stream, so a thousand
 * streams serialize it once, not a thousand times.
 */
const frames = new WeakMap<StreamItem, string>();

/** One SSE frame for a stream item (formatted once per item). */
export function formatItem(item: StreamItem): string {
  let frame = frames.get(item);
  if (frame === undefined) {
    frame = formatFrame(item);
    frames.set(item, frame);
  }
  return frame;
}

/** Builds in snapshots get the API's build shape. */
function formatFrame(item: StreamItem): string {
  const payload =
    item.kind === "snapshot"
      ? {
          kind: item.kind,
          id: item.id,
          ...(item.build ? { build: toApiBuildDetail(item.build) } : {}),
          ...(item.active ? { active: item.active.map(toApiBuild) } : {}),
          ...(item.counts ? { counts: item.counts } : {}),
        }
      : item;
  const event = item.kind === "snapshot" ? "snapshot" : item.type;
  return `id: ${item.id}\nevent: ${event}\ndata: ${JSON.stringify(payload)}\n\n`;
}

/** The headers of an event stream's response (and of a HEAD on its route). */
export const STREAM_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  // Nginx and similar buffer responses unless told not to.
  "x-accel-buffering": "no",
  // A stream that ends is not reused: a shutting-down server can then close the socket at once.
  connection: "close",
} as const;

export interface PipeOptions {
  controller: AbortController;
  heartbeatMs: number;
  /** The current coalescing window (StreamRegistry.coalesceMs). */
  coalesceMs: () => number;
  requestId: string;
  log: FastifyBaseLogger;
  /**
   * Headers the request's hooks set on the reply (CORS, rate limit): a hijacked reply bypasses
   * Fastify's sending, so they are written here or not at all.
   */
  headers?: Record<string, number | string | string[] | undefined>;
}

/**
 * Writes, not formatting, are what many streams cost: one system call per frame per stream was about
 * half of the server's CPU at 100 updates/s to 1,000 streams, and the event loop saturated (the
 * API's other requests waited behind it). So the streams of a process share a write budget: each
 * stream writes at most once per `open streams / 20` ms (20,000 writes per second in all), at most
 * every 50 ms. A frame after a quiet spell leaves on the next timer tick, with whatever else came in
 * the same tick; frames arriving within the window after a write leave together at its end. With a
 * hundred streams the window is 5 ms; with a thousand, 50 ms, which a browser does not notice.
 */
const SSE_WRITES_PER_SECOND = 20_000;
export const SSE_MAX_COALESCE_MS = 50;

/** A pending batch this large leaves at once (a snapshot, a catch-up after Last-Event-ID). */
const MAX_PENDING_CHARS = 64 * 1024;

/** Frames for one response, written at most once per `windowMs()` (see SSE_WRITES_PER_SECOND). */
export class CoalescingWriter {
  private pending = "";
  private lastWriteAt = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly res: ServerResponse,
    private readonly windowMs: () => number,
  ) {}

  add(frame: string): void {
    this.pending += frame;
    if (this.timer) {
      if (this.pending.length >= MAX_PENDING_CHARS) this.flush();
      return;
    }
    const wait = this.lastWriteAt + this.windowMs() - performance.now();
    // Frames of the same tick (one hub read) still leave together: the timer fires after them.
    this.timer = setTimeout(() => this.flush(), Math.max(0, wait));
  }

  /** Writes what is pending; false when the client's buffer is full (wait for "drain"). */
  flush(): boolean {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending === "" || this.res.writableEnded || this.res.destroyed)
      return !this.res.writableNeedDrain;
    const chunk = this.pending;
    this.pending = "";
    this.lastWriteAt = performance.now();
    return this.res.write(chunk);
  }

  get needsDrain(): boolean {
    return this.res.writableNeedDrain;
  }

  /** Drops what is pending (the response is ending without it: the client resumes by its last id). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = "";
  }
}

/**
 * Starts an event stream's response (a hijacked reply): the hooks' headers, then the stream's own,
 * which win where both name one, then a first comment. Node sends the headers with the first write:
 * without one, a client of a quiet stream saw not even the status until the first heartbeat.
 */
export function openStream(
  res: ServerResponse,
  hookHeaders: PipeOptions["headers"],
  requestId: string,
): void {
  setHeaders(res, hookHeaders);
  res.writeHead(200, { ...STREAM_HEADERS, "x-request-id": requestId });
  res.write(": stream open\n\n");
}

/** Streams `items` to `res` until one side ends; resolves when the response has ended. */
export async function pipeEvents(
  res: ServerResponse,
  items: AsyncIterable<StreamItem>,
  options: PipeOptions,
): Promise<void> {
  const { controller, log } = options;
  const started = Date.now();
  let sent = 0;
  openStream(res, options.headers, options.requestId);
  let clientGone = false;
  const onClose = () => {
    clientGone = true;
    controller.abort();
  };
  res.on("close", onClose);
  const writer = new CoalescingWriter(res, options.coalesceMs);
  const heartbeat = setInterval(() => writer.add(": heartbeat\n\n"), options.heartbeatMs);
  let reason = "subscription ended";
  try {
    for await (const item of items) {
      if (controller.signal.aborted) break;
      sent += 1;
      writer.add(formatItem(item));
      if (writer.needsDrain) await drained(res, controller.signal);
    }
    // What the subscription gave last (a build's final event) leaves before the response ends.
    writer.flush();
    if (controller.signal.aborted) reason = clientGone ? "client went away" : "server shutting down";
  } catch (err) {
    // The client reconnects with Last-Event-ID and resumes from the table: nothing is lost.
    reason = `subscription failed: ${(err as Error).message}`;
    if (!clientGone) {
      writer.add(": stream interrupted, reconnect with Last-Event-ID\n\n");
      writer.flush();
    }
  } finally {
    clearInterval(heartbeat);
    writer.close();
    res.off("close", onClose);
    if (!res.writableEnded) res.end();
    log.info({ events: sent, durationMs: Date.now() - started, reason }, "event stream ended");
  }
}

/** Sets the headers that have a value (Node refuses an undefined one). */
function setHeaders(res: ServerResponse, headers: PipeOptions["headers"] = {}): void {
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) res.setHeader(name, value);
  }
}

/** Waits until a slow client has taken what was written (or the stream is aborted). */
function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
