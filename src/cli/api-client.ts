/**
 * The CLI's client of the HTTP API (`oculus submit`, `status`, `queue`, `workers`, `watch`, `stop`,
 * `retry`): JSON requests with the bearer token, the API's errors turned into one clear message, and
 * the Server-Sent Events stream read with reconnection from the last event id.
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";

export const DEFAULT_API_URL = "http://127.0.0.1:8080";

/** What went wrong talking to the API; `status` is the HTTP status (0: no answer). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    /** From Retry-After (429, 503): how long to wait before asking again. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface ApiClientOptions {
  url: string;
  token: string | undefined;
}

export class ApiClient {
  private readonly base: URL;

  constructor(private readonly options: ApiClientOptions) {
    try {
      this.base = new URL(options.url);
    } catch {
      throw new ApiError(`--url / OCULUS_URL: not a URL: "${options.url}"`, 0, "config_invalid");
    }
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") {
      throw new ApiError(
        `--url / OCULUS_URL: must be http:// or https://, got "${options.url}"`,
        0,
        "config_invalid",
      );
    }
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /** A text resource as bytes, with the response headers (build logs). */
  async getBytes(path: string): Promise<{ status: number; headers: Headers; body: Buffer }> {
    const response = await this.fetch(this.url(path), {
      method: "GET",
      headers: this.headers({ accept: "text/plain" }),
    });
    const body = Buffer.from(await response.arrayBuffer());
    if (!response.ok && response.status !== 416) {
      const text = body.toString("utf8");
      throw errorFrom(response.status, parseJson(text), text);
    }
    return { status: response.status, headers: response.headers, body };
  }

  put<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", path, body);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { accept: "application/json", ...extra };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    return headers;
  }

  private url(path: string): URL {
    return new URL(path.replace(/^\//, ""), this.base.href.endsWith("/") ? this.base : `${this.base.href}/`);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetch(this.url(path), {
      method,
      headers: this.headers(body === undefined ? {} : { "content-type": "application/json" }),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    const parsed = parseJson(text);
    if (!response.ok) throw errorFrom(response.status, parsed, text);
    return parsed as T;
  }

  private async fetch(url: URL, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new ApiError(
        `cannot reach the Oculus API at ${this.base.origin} (${why}); is \`oculus up\` running? Set --url or OCULUS_URL.`,
        0,
        "unreachable",
      );
    }
  }

  /**
   * Reads a Server-Sent Events stream, calling `onEvent` for each event, until `onEvent` returns true
   * or `signal` aborts. A dropped connection is reopened with `Last-Event-ID` (nothing is missed); when
   * the server answers 410 (too far behind to resume), without it, which starts over with a snapshot;
   * a 429 (too many streams from this address) is retried after Retry-After. It gives up after
   * `maxReconnects` failed attempts in a row.
   */
  async stream(
    path: string,
    onEvent: (event: EventSourceMessage) => boolean | undefined,
    options: { signal?: AbortSignal; maxReconnects?: number; onReconnect?: (attempt: number) => void } = {},
  ): Promise<void> {
    let lastEventId: string | undefined;
    let failures = 0;
    for (;;) {
      if (options.signal?.aborted) return;
      let done = false;
      try {
        const response = await this.fetch(this.url(path), {
          headers: this.headers({
            accept: "text/event-stream",
            ...(lastEventId ? { "last-event-id": lastEventId } : {}),
          }),
          ...(options.signal ? { signal: options.signal } : {}),
        });
        if (!response.ok) {
          const text = await response.text();
          throw errorFrom(response.status, parseJson(text), text, response.headers.get("retry-after"));
        }
        failures = 0;
        const parser = createParser({
          onEvent: (event) => {
            if (done) return;
            if (event.id) lastEventId = event.id;
            if (onEvent(event)) done = true;
          },
        });
        const decoder = new TextDecoder();
        for await (const chunk of response.body ?? []) {
          parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
          if (done) break;
        }
        if (done) return;
      } catch (err) {
        if (done || options.signal?.aborted) return;
        failures += 1;
        if (err instanceof ApiError && err.status === 410 && lastEventId !== undefined) {
          // Too far behind to resume (the server's resume cap): start over from a snapshot.
          lastEventId = undefined;
          options.onReconnect?.(failures);
          continue;
        }
        // Other 4xx: asking again will not help; 429 (too many streams) passes after Retry-After.
        if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
        if (failures > (options.maxReconnects ?? 30)) throw err;
        if (err instanceof ApiError && err.retryAfterMs !== undefined) {
          options.onReconnect?.(failures);
          await new Promise((resolve) => setTimeout(resolve, err.retryAfterMs));
          continue;
        }
      }
      // The stream ended without the final event (server restart, proxy): reconnect after a pause.
      options.onReconnect?.(failures);
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** Math.min(failures, 4))));
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

function errorFrom(status: number, body: unknown, text: string, retryAfter?: string | null): ApiError {
  const error = (body as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
  const wait = retryAfterMsOf(retryAfter);
  if (error?.message) {
    const field = error.field && !error.message.includes(error.field) ? ` (${error.field})` : "";
    return new ApiError(`${error.message}${field} [HTTP ${status}]`, status, error.code ?? "error", wait);
  }
  return new ApiError(`HTTP ${status}: ${text.slice(0, 200) || "no body"}`, status, "error", wait);
}

/** Retry-After in seconds as ms (at most a minute); undefined when absent or not a number. */
function retryAfterMsOf(value: string | null | undefined): number | undefined {
  if (!value || !/^\d+$/.test(value.trim())) return undefined;
  return Math.min(60, Number(value.trim())) * 1000;
}
