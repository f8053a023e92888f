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
import type { StreamItem } from "../core/events.js";
import { toApiBuild, toApiBuildDetail } from "./schemas.js";

/** The open streams of a server, so that shutdown can end them all. */
export class StreamRegistry {
  private readonly open = new Set<AbortController>();
  private closing = false;

  /** A controller for a new stream; already aborted when the server is shutting down. */
  track(): AbortController {
    const controller = new AbortController();
    if (this.closing) controller.abort();
    else this.open.add(controller);
    return controller;
  }

  release(controller: AbortController): void {
    this.open.delete(controller);
  }

  get size(): number {
    return this.open.size;
  }

  /** Ends every open stream (server shutdown). */
  closeAll(): void {
    this.closing = true;
    for (const controller of this.open) controller.abort();
    this.open.clear();
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

export interface PipeOptions {
  controller: AbortController;
  heartbeatMs: number;
  requestId: string;
  log: FastifyBaseLogger;
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
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    // Nginx and similar buffer responses unless told not to.
    "x-accel-buffering": "no",
    "x-request-id": options.requestId,
    // A stream that ends is not reused: a shutting-down server can then close the socket at once.
    connection: "close",
  });
  res.write(": stream open\n\n");
  let clientGone = false;
  const onClose = () => {
    clientGone = true;
    controller.abort();
  };
  res.on("close", onClose);
  const heartbeat = setInterval(() => res.write(": heartbeat\n\n"), options.heartbeatMs);
  let reason = "subscription ended";
  try {
    for await (const item of items) {
      if (controller.signal.aborted) break;
      sent += 1;
      // Frames written in one tick leave in one write, not one system call each.
      if (!res.writableCorked) {
        res.cork();
        process.nextTick(() => res.uncork());
      }
      if (!res.write(formatItem(item))) await drained(res, controller.signal);
    }
    if (controller.signal.aborted) reason = clientGone ? "client went away" : "server shutting down";
  } catch (err) {
    // The client reconnects with Last-Event-ID and resumes from the table: nothing is lost.
    reason = `subscription failed: ${(err as Error).message}`;
    if (!clientGone) res.write(": stream interrupted, reconnect with Last-Event-ID\n\n");
  } finally {
    clearInterval(heartbeat);
    res.off("close", onClose);
    if (!res.writableEnded) res.end();
    log.info({ events: sent, durationMs: Date.now() - started, reason }, "event stream ended");
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
