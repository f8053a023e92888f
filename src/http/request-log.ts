/**
 * How a request appears in the log ("incoming request" lines): Fastify's fields, with the values of
 * query parameters that look like credentials (`token`, `access_token`, `api_key`, `password`, ...)
 * replaced by `***`. The API takes tokens only in the Authorization header (redacted by the logger,
 * src/core/logger.ts), but a client may still put one in a URL, and the URL is logged as sent.
 */
import type { FastifyBaseLogger, FastifyRequest } from "fastify";
import type { Logger } from "../core/logger.js";

const SECRET_PARAMETER = /token|key|secret|password|passwd|auth|signature|sig$/i;

/** The URL with the values of credential-like query parameters replaced by `***`. */
export function redactQuery(url: string): string {
  const start = url.indexOf("?");
  if (start < 0) return url;
  const query = url
    .slice(start + 1)
    .split("&")
    .map((pair) => {
      const eq = pair.indexOf("=");
      const rawName = eq < 0 ? pair : pair.slice(0, eq);
      let name = rawName;
      try {
        name = decodeURIComponent(rawName.replace(/\+/g, " "));
      } catch {
        // A malformed escape: judge the name as sent.
      }
      return eq >= 0 && SECRET_PARAMETER.test(name) ? `${rawName}=***` : pair;
    })
    .join("&");
  return `${url.slice(0, start)}?${query}`;
}

function serializeRequest(request: FastifyRequest) {
  return {
    method: request.method,
    url: redactQuery(request.url ?? ""),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  };
}

/** The logger Fastify gets: the given one, with the redacting request serializer. */
export function withRequestRedaction(logger: Logger): FastifyBaseLogger {
  return logger.child({}, { serializers: { req: serializeRequest } }) as FastifyBaseLogger;
}
