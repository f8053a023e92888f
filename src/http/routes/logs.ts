/**
 * A build's whole log (migration 0009, log-store.ts): GET /v1/builds/:id/logs as text, paged by byte
 * offset (`Range: bytes=a-b` or `?offset=N`), and GET /v1/builds/:id/logs/stream, the live log as
 * Server-Sent Events, resumable by byte offset (`Last-Event-ID`), ending when the build has ended.
 * Read from PostgreSQL only: both work on either store and while Redis is down.
 */
import type { ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyRequest } from "fastify";
import { ValidationError } from "../../core/errors.js";
import type { StoredLogChunk } from "../../postgres/log-store.js";
import type { BuildQueue } from "../../queue/build-queue.js";
import { type ApiApp, AUTH_ERRORS, accessDoc, errorResponses, type RouteContext } from "../context.js";
import { buildIdParams, logQuery, logStreamQuery, logStreamResponse, logTextResponse } from "../schemas.js";
import { openStream, STREAM_HEADERS } from "../sse.js";

const tags = ["builds"];
/** At most this many bytes in one response with a Range or an offset (the client asks for the rest). */
export const LOG_PAGE_BYTES = 1024 * 1024;
/** Chunks read per query. */
const CHUNKS_PER_READ = 256;
/** How often a live log stream looks for new output. */
const LOG_POLL_MS = 500;
const FINAL = new Set(["completed", "failed", "stopped"]);

/** `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range; several are not served). */
function parseRange(header: string, size: number): { from: number; to: number } | "unsatisfiable" {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) {
    throw new ValidationError(
      "Range",
      'must be one byte range: "bytes=FROM-", "bytes=FROM-TO" or "bytes=-LAST"',
    );
  }
  if (match[1] === "") {
    const last = Number(match[2]);
    if (last === 0 || size === 0) return "unsatisfiable";
    return { from: Math.max(0, size - last), to: size - 1 };
  }
  const from = Number(match[1]);
  const to = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (from >= size || to < from) return "unsatisfiable";
  return { from, to };
}

/** The bytes from..to (inclusive) of the log, reading chunk pages. */
async function readBytes(queue: BuildQueue, id: string, from: number, to: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let offset = from;
  while (offset <= to) {
    const chunks = await queue.readLog(id, offset, CHUNKS_PER_READ);
    if (chunks.length === 0) break;
    for (const chunk of chunks) {
      const bytes = Buffer.from(chunk.text);
      const start = Math.max(0, offset - chunk.offset);
      const end = Math.min(bytes.length, to + 1 - chunk.offset);
      if (end > start) parts.push(bytes.subarray(start, end));
      offset = chunk.offset + end;
      if (offset > to) break;
    }
    const last = chunks[chunks.length - 1] as StoredLogChunk;
    if (offset < last.offset + Buffer.byteLength(last.text)) break;
  }
  return Buffer.concat(parts);
}

/**
 * The bytes as they are: a page may end inside a UTF-8 character, and the next page starts there, so
 * the pages add up to the log exactly. (Fastify sends a Buffer as is; the schema types say string.)
 */
function asText(bytes: Buffer): string {
  return bytes as unknown as string;
}

/** Where a live log resumes: Last-Event-ID (a reconnecting EventSource), else ?offset, else 0. */
function resumeOffset(request: FastifyRequest, fromQuery: number | undefined): number {
  const header = request.headers["last-event-id"];
  if (header === undefined || header === "") return fromQuery ?? 0;
  if (typeof header !== "string" || !/^\d{1,15}$/.test(header)) {
    throw new ValidationError("Last-Event-ID", "must be a byte offset (digits)");
  }
  return Number(header);
}

export function logRoutes(app: ApiApp, ctx: RouteContext): void {
  const { queue, streams } = ctx;

  app.get(
    "/v1/builds/:id/logs",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "A build's whole log as text (stdout and stderr); Range: bytes= or ?offset= for paging",
        ...accessDoc("read"),
        params: buildIdParams,
        querystring: logQuery,
        response: {
          200: logTextResponse("the whole log (or, with ?offset, from there: at most 1 MiB)"),
          206: logTextResponse("the requested bytes (at most 1 MiB); Content-Range says which"),
          416: logTextResponse("the range starts at or past the end of the log; Content-Range: bytes */SIZE"),
          ...errorResponses(400, 404, ...AUTH_ERRORS),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const state = await queue.logState(id);
      const size = state.bytes;
      reply
        .header("content-type", "text/plain; charset=utf-8")
        .header("accept-ranges", "bytes")
        .header("x-log-size", String(size))
        .header("x-log-complete", String(FINAL.has(state.status)))
        .header("x-log-truncated", String(state.truncated))
        .header("x-build-status", state.status);
      const range = request.headers.range;
      if (range !== undefined) {
        const wanted = parseRange(range, size);
        if (wanted === "unsatisfiable") {
          return reply.status(416).header("content-range", `bytes */${size}`).send("");
        }
        const to = Math.min(wanted.to, wanted.from + LOG_PAGE_BYTES - 1);
        const body = await readBytes(queue, id, wanted.from, to);
        const end = wanted.from + body.length - 1;
        return reply
          .status(206)
          .header("content-range", `bytes ${wanted.from}-${end}/${size}`)
          .send(asText(body));
      }
      const offset = request.query.offset;
      if (offset === undefined)
        return reply.status(200).send(asText(await readBytes(queue, id, 0, size - 1)));
      if (offset > size) return reply.status(416).header("content-range", `bytes */${size}`).send("");
      const to = Math.min(size - 1, offset + LOG_PAGE_BYTES - 1);
      const body = offset === size ? Buffer.alloc(0) : await readBytes(queue, id, offset, to);
      return reply
        .status(200)
        .header("x-log-next-offset", String(offset + body.length))
        .send(asText(body));
    },
  );

  app.get(
    "/v1/builds/:id/logs/stream",
    {
      config: { access: "read" },
      schema: {
        tags,
        summary: "A build's log, live (SSE) from a byte offset until the build has ended",
        ...accessDoc("read"),
        params: buildIdParams,
        querystring: logStreamQuery,
        response: { 200: logStreamResponse, ...errorResponses(400, 404, ...AUTH_ERRORS) },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const from = resumeOffset(request, request.query.offset);
      await queue.logState(id); // 404 before the stream starts
      // HEAD: what a GET would answer, without the stream. Node sends a HEAD's headers only when the
      // response ends, and this stream ends with the build: a HEAD through the stream hung.
      if (request.method === "HEAD") return reply.status(200).headers(STREAM_HEADERS).send("");
      const controller = streams.track();
      const onClose = () => controller.abort();
      request.raw.once("close", onClose);
      try {
        reply.hijack();
        const res = reply.raw;
        openStream(res, reply.getHeaders(), request.id);
        await followLog(queue, id, from, res, controller.signal, ctx.sseHeartbeatMs).catch((err: Error) =>
          request.log.warn({ err: err.message, buildId: id }, "log stream ended by an error"),
        );
        res.end();
      } finally {
        request.raw.off("close", onClose);
        streams.release(controller);
      }
    },
  );
}

/**
 * Writes the log from `offset` as `log` events (id: the byte offset after the event's text; data:
 * {stream, at, offset, text}), waiting for more while the build runs; then an `end` event with the
 * build's final status. Each write waits for the socket to drain, so a slow reader slows the reads.
 */
async function followLog(
  queue: BuildQueue,
  id: string,
  start: number,
  res: ServerResponse,
  signal: AbortSignal,
  heartbeatMs: number,
): Promise<void> {
  let offset = start;
  let lastWrite = Date.now();
  while (!signal.aborted) {
    // The status first: output written before the build ended is all in once the status is final.
    const state = await queue.logState(id);
    const chunks = offset < state.bytes ? await queue.readLog(id, offset, CHUNKS_PER_READ) : [];
    for (const chunk of chunks) {
      const bytes = Buffer.from(chunk.text);
      const skip = Math.max(0, offset - chunk.offset);
      if (skip >= bytes.length) continue;
      const text = bytes.subarray(skip).toString("utf8");
      const end = chunk.offset + bytes.length;
      const data = JSON.stringify({ stream: chunk.stream, at: chunk.at, offset: offset, text });
      await write(res, `id: ${end}\nevent: log\ndata: ${data}\n\n`, signal);
      offset = end;
      lastWrite = Date.now();
    }
    if (chunks.length > 0) continue; // more may follow at once
    if (FINAL.has(state.status) && offset >= state.bytes) {
      const data = JSON.stringify({ status: state.status, size: state.bytes, truncated: state.truncated });
      await write(res, `id: ${offset}\nevent: end\ndata: ${data}\n\n`, signal);
      return;
    }
    if (Date.now() - lastWrite >= heartbeatMs) {
      await write(res, ": heartbeat\n\n", signal);
      lastWrite = Date.now();
    }
    await sleep(LOG_POLL_MS, undefined, { signal }).catch(() => undefined);
  }
}

function write(res: ServerResponse, frame: string, signal: AbortSignal): Promise<void> {
  if (signal.aborted || res.destroyed) return Promise.reject(new Error("the client left"));
  if (res.write(frame)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      res.off("drain", onDrain);
      reject(new Error("the client left"));
    };
    const onDrain = () => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    };
    res.once("drain", onDrain);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
