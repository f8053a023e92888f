/**
 * What a build command can see (docs/security.md): the build variables, the allowlist of
 * the process environment and the names the operator passes (`--env`, OCULUS_BUILD_ENV); never the
 * queue's own secrets. The end-to-end case is the one of the audit: a real `oculus worker --command
 * env` with the admin token and the store URLs in its environment, read back from the build's log.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildBaseEnv, checkPassedNames, passedEnvFromFlags } from "../../src/worker/build-env.js";
import { commandHandler } from "../../src/worker/command-handler.js";
import { runBuildCommand } from "../../src/worker/command-runner.js";
import { type OculusProcess, oculus, spawnOculus } from "../helpers/oculus-cli.js";
import { TEST_DATABASE_URL } from "../helpers/postgres.js";
import { eventually, openTestQueue } from "../helpers/queue.js";

const SECRETS = {
  OCULUS_TOKENS: "admin:admin:very-secret-admin-token-0123456789",
  DATABASE_URL: "postgres://oculus:pg-password-xyz@db.example/oculus",
  REDIS_URL: "redis://:redis-password-xyz@cache.example:6379",
  PGPASSWORD: "pg-password-xyz",
};

describe("build environment: the allowlist", () => {
  it("keeps allowlisted variables and passed names, drops everything else", () => {
    const from = {
      PATH: "/usr/bin",
      HOME: "/home/op",
      LANG: "C.UTF-8",
      LC_TIME: "de_DE.UTF-8",
      TZ: "UTC",
      MY_LICENSE: "lic-1",
      UNRELATED: "x",
      ...SECRETS,
    };
    expect(buildBaseEnv(from, ["MY_LICENSE", "NOT_SET"])).toEqual({
      PATH: "/usr/bin",
      HOME: "/home/op",
      LANG: "C.UTF-8",
      LC_TIME: "de_DE.UTF-8",
      TZ: "UTC",
      MY_LICENSE: "lic-1",
    });
  });

  it("refuses to pass the queue's secrets, build variables and bad names (config_invalid)", () => {
    for (const name of ["OCULUS_TOKENS", "DATABASE_URL", "REDIS_URL", "PGPASSWORD", "OCULUS_TOKENS_FILE"]) {
      expect(() => checkPassedNames([name], "--env")).toThrow(/--env: .* queue's own secrets/);
    }
    expect(() => checkPassedNames(["OCULUS_BUILD_ID"], "--env")).toThrow(/set by the worker/);
    expect(() => checkPassedNames(["A=B"], "--env")).toThrow(/not an environment variable name/);
    expect(() => commandHandler("true", { passEnv: ["REDIS_URL"] })).toThrow(/REDIS_URL/);
  });

  it("reads OCULUS_BUILD_ENV (comma-separated) with --env and warns about names not set", () => {
    const warnings: string[] = [];
    const names = passedEnvFromFlags(["A"], { A: "1", B: "2", OCULUS_BUILD_ENV: " B, ,C ,A" }, (w) =>
      warnings.push(w),
    );
    expect(names).toEqual(["A", "B", "C"]);
    expect(warnings).toEqual([expect.stringContaining("C")]);
    expect(() => passedEnvFromFlags([], { OCULUS_BUILD_ENV: "DATABASE_URL" }, () => undefined)).toThrow(
      /OCULUS_BUILD_ENV: DATABASE_URL/,
    );
  });

  it("runBuildCommand without env gives the command the allowlist of process.env only", async () => {
    const saved = { ...process.env };
    Object.assign(process.env, SECRETS, { SOME_OTHER_VAR: "other" });
    try {
      const lines: string[] = [];
      const result = await runBuildCommand({
        command: "env",
        build: { id: "b-1", lease: 1, strategyId: "s", params: {} },
        signal: new AbortController().signal,
        onLog: (line) => lines.push(line),
      });
      expect(result.outcome).toBe("completed");
      const names = lines.map((l) => l.split("=")[0]);
      expect(names).toContain("PATH");
      expect(names).toContain("OCULUS_BUILD_ID");
      for (const name of [...Object.keys(SECRETS), "SOME_OTHER_VAR"]) expect(names).not.toContain(name);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });
});

describe("oculus worker --command env", () => {
  let q: Awaited<ReturnType<typeof openTestQueue>>;
  let worker: OculusProcess | undefined;

  beforeAll(async () => {
    q = await openTestQueue("build_env");
  });
  afterAll(async () => {
    worker?.child.kill("SIGKILL");
    await worker?.exited;
    await q?.cleanup();
  });

  it("shows the build variables, the allowlist and the passed names in the log, not the secrets", async () => {
    worker = spawnOculus(["worker", "--command", "env", "--env", "MY_LICENSE", "--heartbeat-ms", "500"], {
      ...SECRETS,
      // The worker's real store: the secrets above stand for what an operator's environment holds.
      DATABASE_URL: TEST_DATABASE_URL,
      OCULUS_SCHEMA: q.schema,
      OCULUS_PREFIX: q.prefix,
      HOME: "/tmp",
      TZ: "Europe/Berlin",
      MY_LICENSE: "license-abc",
      TEAM_NAME: "quants",
      NOT_PASSED: "hidden",
      OCULUS_BUILD_ENV: "TEAM_NAME",
    });
    const { build } = await q.queue.submit({ strategyId: "env-check" });
    const done = await eventually(async () => {
      if (worker?.child.exitCode !== null) throw new Error(`worker exited:\n${worker?.output()}`);
      const b = await q.queue.get(build.id);
      return b.status === "completed" ? b : undefined;
    }, 60_000);
    const log = done.logTail ?? "";
    expect(log).toContain(`OCULUS_BUILD_ID=${build.id}`);
    expect(log).toContain("OCULUS_STRATEGY_ID=env-check");
    expect(log).toContain("MY_LICENSE=license-abc");
    expect(log).toContain("TEAM_NAME=quants");
    expect(log).toContain("TZ=Europe/Berlin");
    expect(log).toMatch(/^PATH=/m);
    for (const leaked of ["OCULUS_TOKENS", "DATABASE_URL", "REDIS_URL", "PGPASSWORD", "NOT_PASSED"]) {
      expect(log).not.toContain(`${leaked}=`);
    }
    expect(log).not.toContain("very-secret-admin-token");
    expect(log).not.toContain("pg-password-xyz");
  });

  it("refuses --env DATABASE_URL with exit code 2, before opening anything", async () => {
    const res = await oculus(["worker", "--command", "env", "--env", "DATABASE_URL"], {
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
    });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--env: DATABASE_URL is one of the queue's own secrets/);
    const cap = await oculus(["worker", "--command", "env"], { OCULUS_BUILD_LOG_MAX_BYTES: "10MB" });
    expect(cap.code).toBe(2);
    expect(cap.stderr).toMatch(/invalid OCULUS_BUILD_LOG_MAX_BYTES/);
  });
});
