/**
 * GET /: the operator's dashboard (src/http/web/dashboard.html, embedded at build time). The page
 * holds no data; it asks the API, with the token the operator types in, like any other client.
 */
import { web } from "../../generated/assets.js";
import type { ApiApp } from "../context.js";

export function dashboardRoutes(app: ApiApp): void {
  app.get("/", { config: { access: "public" }, schema: { hide: true } }, async (_request, reply) =>
    reply.type("text/html; charset=utf-8").send(web["dashboard.html"]),
  );
}
