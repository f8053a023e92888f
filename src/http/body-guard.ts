/**
 * Bodies the server would otherwise read as something they are not: Fastify ignores
 * Content-Encoding (a gzip body would be parsed as if it were plain JSON, and fail confusingly or,
 * worse, not) and reads every JSON body as UTF-8 whatever charset it announces. Both are refused with
 * 415 naming the header, before the body is read. Requests without a body are not concerned.
 */
import { UnsupportedMediaTypeError } from "../core/errors.js";
import type { ApiApp } from "./context.js";

/** The charset parameter of a Content-Type, lower-cased and unquoted; undefined when there is none. */
function charsetOf(contentType: string): string | undefined {
  const match = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i.exec(contentType);
  return match?.[2]?.toLowerCase();
}

function hasBody(headers: Record<string, string | string[] | undefined>): boolean {
  if (headers["transfer-encoding"] !== undefined) return true;
  const length = headers["content-length"];
  return length !== undefined && length !== "0";
}

/** Refuses (415) bodies with a Content-Encoding other than identity or a charset other than UTF-8. */
export function installBodyGuard(app: ApiApp): void {
  // preParsing: after auth and the rate limit (onRequest), before the body is read.
  app.addHook("preParsing", async (request, _reply, payload) => {
    if (!hasBody(request.headers)) return payload;
    const encoding = request.headers["content-encoding"];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== "identity") {
      throw new UnsupportedMediaTypeError(
        "Content-Encoding",
        `${JSON.stringify(encoding.slice(0, 50))} is not supported: send the body uncompressed (identity)`,
      );
    }
    const contentType = request.headers["content-type"];
    const charset = contentType === undefined ? undefined : charsetOf(contentType);
    if (charset !== undefined && charset !== "utf-8" && charset !== "utf8") {
      throw new UnsupportedMediaTypeError(
        "Content-Type",
        `charset ${JSON.stringify(charset.slice(0, 50))} is not supported: send UTF-8`,
      );
    }
    return payload;
  });
}
