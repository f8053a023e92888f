/**
 * The operator's dashboard (docs/http-api.md, "Dashboard"): GET / (the overview) and GET /builds/:id
 * (one build), their shared script and the charting library (uPlot) under /assets/, and the favicon.
 * All embedded at build time (src/http/web, scripts/embed-assets.mjs): the dashboard loads nothing
 * from another origin. The pages hold no data; they ask the API, with the token the operator types
 * in, like any other client.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { web } from "../../generated/assets.js";
import type { ApiApp } from "../context.js";
import { buildIdParams } from "../schemas.js";

/** The files under /assets/, by name, with their content types. */
const ASSETS: Record<string, { body: string; type: string }> = {
  "common.js": { body: web["common.js"], type: "text/javascript; charset=utf-8" },
  "dashboard.css": { body: web["dashboard.css"], type: "text/css; charset=utf-8" },
  "uplot.js": { body: web["uplot.js"], type: "text/javascript; charset=utf-8" },
  "uplot.css": { body: web["uplot.css"], type: "text/css; charset=utf-8" },
  "favicon.svg": { body: web["favicon.svg"], type: "image/svg+xml" },
};
const ETAGS = Object.fromEntries(
  Object.entries(ASSETS).map(([name, asset]) => [
    name,
    `"${createHash("sha256").update(asset.body).digest("base64url").slice(0, 27)}"`,
  ]),
);

const assetParams = z.strictObject({
  name: z.enum(Object.keys(ASSETS) as [string, ...string[]], { error: "no such asset" }),
});

const page = { config: { access: "public" as const }, schema: { hide: true } };

export function dashboardRoutes(app: ApiApp): void {
  app.get("/", page, async (_request, reply) =>
    reply.type("text/html; charset=utf-8").send(web["dashboard.html"]),
  );
  app.get(
    "/builds/:id",
    { ...page, schema: { ...page.schema, params: buildIdParams } },
    async (_request, reply) => reply.type("text/html; charset=utf-8").send(web["build.html"]),
  );
  // Revalidated on each load (ETag; 304 when unchanged), so a new version is picked up at once.
  app.get(
    "/assets/:name",
    { ...page, schema: { ...page.schema, params: assetParams } },
    async (request, reply) => {
      const { name } = request.params;
      const asset = ASSETS[name] as { body: string; type: string };
      const etag = ETAGS[name] as string;
      reply.header("etag", etag).header("cache-control", "no-cache");
      if (request.headers["if-none-match"] === etag) return reply.status(304).send("");
      return reply.type(asset.type).send(asset.body);
    },
  );
  for (const path of ["/favicon.ico", "/favicon.svg"]) {
    app.get(path, page, async (_request, reply) =>
      reply.type("image/svg+xml").header("cache-control", "public, max-age=86400").send(web["favicon.svg"]),
    );
  }
}
