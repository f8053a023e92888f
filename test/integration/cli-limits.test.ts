/**
 * `oculus limits list`, `oculus limits set KEY N`, and `oculus submit --concurrency-key K
 * --supersede` (the built binary against a real API server): a build waiting on its key's limit is
 * shown as such by status and queue, raising the limit admits it, bad input is refused.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestApi, type TestApi } from "../helpers/api.js";

const run = promisify(execFile);
const BIN = path.resolve("dist/src/cli/main.js");
const ADMIN = "cli-limits-admin-token-0123456789";

describe("oculus limits and submit --concurrency-key", () => {
  let api: TestApi;
  let url: string;

  async function oculus(args: string[]) {
    try {
      const { stdout, stderr } = await run("node", [BIN, ...args], {
        env: { PATH: process.env.PATH ?? "", OCULUS_URL: url, OCULUS_TOKEN: ADMIN },
        timeout: 60_000,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  beforeAll(async () => {
    api = await openTestApi("cli_limits", { tokens: [{ name: "ops", token: ADMIN, scopes: ["admin"] }] });
    url = await api.url();
  });
  afterAll(async () => {
    await api?.cleanup();
  });

  it("submits with a key, shows the build waiting on it, and a raised limit admits it", async () => {
    const first = await oculus(["submit", "--strategy", "deploy", "--concurrency-key", "prod", "--json"]);
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout).build).toMatchObject({ concurrencyKey: "prod", held: false });
    const [running] = await api.queue.claim("w1", 1);
    expect(running?.concurrencyKey).toBe("prod");

    const second = await oculus(["submit", "--strategy", "deploy", "--concurrency-key", "prod"]);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/queued {2}waiting on concurrency key prod \(1 running, limit 1\)/);
    const id = second.stdout.split(/\s+/)[0] ?? "";
    const status = await oculus(["status", id]);
    expect(status.stdout).toMatch(
      /status\s+queued \(waiting on concurrency key prod \(1 running, limit 1\)\)/,
    );
    expect(status.stdout).toMatch(/concurrency key\s+prod/);
    const queue = await oculus(["queue"]);
    expect(queue.stdout).toMatch(/KEY/);
    expect(queue.stdout).toMatch(/prod \(held\)/);

    const listed = await oculus(["limits", "list"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/KEY\s+LIMIT\s+RUNNING\s+ADMITTED\s+WAITING/);
    expect(listed.stdout).toMatch(/prod\s+1\s+1\s+0\s+1/);

    const set = await oculus(["limits", "set", "prod", "2"]);
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(/prod {2}limit 2 {2}\(1 running, 1 admitted, 0 waiting\)/);
    const [next] = await api.queue.claim("w1", 1);
    expect(next?.id).toBe(id);
    const json = JSON.parse((await oculus(["limits", "list", "--json"])).stdout);
    expect(json.limits).toContainEqual(expect.objectContaining({ key: "prod", limit: 2, running: 2 }));
  });

  it("supersedes the strategy's queued builds", async () => {
    const old = JSON.parse((await oculus(["submit", "--strategy", "site", "--json"])).stdout);
    const newer = await oculus(["submit", "--strategy", "site", "--supersede"]);
    expect(newer.code).toBe(0);
    expect(newer.stdout).toContain(`superseded ${old.build.id} (stopped)`);
    expect((await api.queue.get(old.build.id)).status).toBe("stopped");
  });

  it("refuses bad limits and keys, naming what is wrong", async () => {
    const zero = await oculus(["limits", "set", "prod", "0"]);
    expect(zero.code).toBe(1);
    expect(zero.stderr).toMatch(/limit.*positive integer.*HTTP 400/);
    const word = await oculus(["limits", "set", "prod", "many"]);
    expect(word.code).toBe(2);
    expect(word.stderr).toMatch(/N must be an integer, got "many"/);
    const key = await oculus(["limits", "set", "bad\u0001key", "2"]);
    expect(key.code).toBe(1);
    expect(key.stderr).toMatch(/key.*printable.*HTTP 400/);
    const submit = await oculus(["submit", "--strategy", "s", "--concurrency-key", ""]);
    expect(submit.code).toBe(1);
    expect(submit.stderr).toMatch(/concurrencyKey.*HTTP 400/);
    expect((await api.queue.limit("prod")).limit).toBe(2);
  });
});
