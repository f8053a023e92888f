#!/usr/bin/env node
/**
 * `npm start`: compile only when dist/ is older than the sources (a full build takes ~25 s; an
 * up-to-date start takes none of it), then run `oculus up`. On the embedded store (no DATABASE_URL)
 * it adds `--demo`, so a new user sees demo builds walk through the phases; against a real
 * PostgreSQL it never does (a demo worker would claim real builds). Extra arguments are passed on:
 * `npm start -- --port 9000`.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const MAIN = path.join(root, "dist/src/cli/main.js");
/** What a build reads: the sources (assets included), the compiler settings and the embed script. */
const INPUTS = [
  "src",
  "bench",
  "test/helpers/pg-cluster.ts",
  "package.json",
  "tsconfig.json",
  "tsconfig.build.json",
  "scripts/embed-assets.mjs",
];
/** Written by the embed step during a build: newer than dist/ is no reason to build again. */
const GENERATED = path.join(root, "src/generated");

function newestMtime(file) {
  if (file === GENERATED || !existsSync(file)) return 0;
  const info = statSync(file);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = 0;
  for (const name of readdirSync(file)) newest = Math.max(newest, newestMtime(path.join(file, name)));
  return newest;
}

function upToDate() {
  if (!existsSync(MAIN)) return false;
  const built = statSync(MAIN).mtimeMs;
  return INPUTS.every((input) => newestMtime(path.join(root, input)) <= built);
}

if (!upToDate()) {
  console.log("compiling (dist/ is older than the sources) ...");
  const build = spawnSync("npm", ["run", "-s", "build"], { cwd: root, stdio: "inherit" });
  if (build.status !== 0) process.exit(build.status ?? 1);
}

const args = ["up", ...(process.env.DATABASE_URL ? [] : ["--demo"]), ...process.argv.slice(2)];
const child = spawn(process.execPath, [MAIN, ...args], { stdio: "inherit" });
// The terminal's Ctrl-C reaches the child itself (same process group): passing it on too would count
// as a second Ctrl-C (which forces the shutdown). A supervisor's SIGTERM or SIGHUP reaches only us.
process.on("SIGINT", () => undefined);
for (const signal of ["SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
