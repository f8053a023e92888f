/**
 * The oculus processes of a phase, as an operator runs them: two `oculus up --workers 0` (the HTTP
 * API, reconciler) and N `oculus worker --command CMD` processes, each under a tiny supervisor here
 * that notes every exit it did not ask for (a death) and starts the process again after a second, as
 * systemd or Kubernetes would, so that one death does not hide what the rest of the phase does.
 *
 * Every worker incarnation has a name (`w2.3`: worker 2, third start) that its build command writes
 * into its run file, so that the analysis knows which process ran which run, and when that process
 * ended (an ended worker's commands are killed by its watchdog).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "../stats.js";

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/cli/main.js, from dist/bench/chaos/. */
export const CLI = path.resolve(here, "../../src/cli/main.js");

/**
 * The build command: records its start, end (or abort on SIGTERM) with the build id, lease, the
 * worker incarnation and the wall clock in ms, one line per write with O_APPEND (`>>`); prints a few
 * progress lines; "works" 50-300 ms; prints its result. bash, for $EPOCHREALTIME and $RANDOM without
 * a fork. `sleep & wait` so that a SIGTERM is handled at once, not after the sleep.
 */
const BUILD_SCRIPT = `#!/bin/bash
# $1: run file, $2: worker incarnation
f="$1"; w="$2"
ms() { local t=\${EPOCHREALTIME/./}; echo \${t:0:13}; }
trap 'echo "abort $OCULUS_BUILD_ID $OCULUS_BUILD_LEASE $w $(ms)" >> "$f"; exit 143' TERM
echo "start $OCULUS_BUILD_ID $OCULUS_BUILD_LEASE $w $(ms)" >> "$f"
echo '::progress {"phase": "training", "percent": 10}'
d=$(( 50 + RANDOM % 251 ))
sleep "0.$(printf '%03d' $d)" & wait $!
echo '::progress {"phase": "optimizing", "percent": 90}'
echo "end $OCULUS_BUILD_ID $OCULUS_BUILD_LEASE $w $(ms)" >> "$f"
echo '::result {"ok": true}'
`;

export function writeBuildScript(dir: string): string {
  const file = path.join(dir, "build.sh");
  writeFileSync(file, BUILD_SCRIPT, { mode: 0o755 });
  return file;
}

export interface Death {
  name: string;
  at: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The error it printed last (from its stderr). */
  reason: string;
}

export interface Exit {
  name: string;
  at: number;
  expected: boolean;
}

interface Spec {
  role: "up" | "worker";
  args: string[];
  env: NodeJS.ProcessEnv;
}

const live = new Set<ChildProcess>();
// A harness that dies or is interrupted leaves no oculus process behind.
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** One supervised process (an `up` or a worker), restarted after each exit unless stopped. */
export class Supervised {
  private child: ChildProcess | undefined;
  private incarnation = 0;
  private stopped = false;
  private expectExit = false;
  private tail: string[] = [];
  private exitedPromise: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    private readonly spec: (incarnation: string) => Spec,
    private readonly logDir: string,
    private readonly fleet: Fleet,
  ) {}

  get current(): string {
    return `${this.name}.${this.incarnation}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get alive(): boolean {
    return this.child !== undefined;
  }

  start(): void {
    this.incarnation += 1;
    const name = this.current;
    const spec = this.spec(name);
    const log = createWriteStream(path.join(this.logDir, `${name}.log`), { flags: "a" });
    const child = spawn(process.execPath, [CLI, spec.role, ...spec.args], {
      env: spec.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.expectExit = false;
    this.tail = [];
    live.add(child);
    child.stdout?.pipe(log, { end: false });
    child.stderr?.on("data", (chunk: Buffer) => {
      log.write(chunk);
      this.tail.push(...chunk.toString().trimEnd().split("\n"));
      if (this.tail.length > 60) this.tail.splice(0, this.tail.length - 60);
    });
    this.exitedPromise = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        live.delete(child);
        this.child = undefined;
        const at = Date.now();
        this.fleet.exits.push({ name, at, expected: this.expectExit });
        if (!this.expectExit) {
          this.fleet.deaths.push({ name, at, code, signal, reason: deathReason(this.tail) });
        }
        // Let the pipes drain into the log before closing it.
        setTimeout(() => log.end(), 200);
        resolve();
        if (!this.stopped) {
          // The supervisor's restart: after a second, as a process manager would.
          setTimeout(
            () => {
              if (!this.stopped && !this.child) this.start();
            },
            this.expectExit ? 0 : 1000,
          );
        }
      });
    });
  }

  /** kill -9 on purpose (an expected exit); the supervisor starts it again unless `respawn` is false. */
  async kill9(respawn: boolean): Promise<void> {
    if (!this.child) return;
    if (!respawn) this.stopped = true;
    this.expectExit = true;
    this.child.kill("SIGKILL");
    await this.exitedPromise;
  }

  /** Starts it again after kill9(respawn false). */
  resume(): void {
    this.stopped = false;
    if (!this.child) this.start();
  }

  /** SIGTERM, SIGKILL after `graceMs`; not restarted. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    const child = this.child;
    if (!child) return;
    this.expectExit = true;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await this.exitedPromise;
    clearTimeout(timer);
  }
}

export interface FleetOptions {
  databaseUrl: (applicationName: string) => string;
  redisUrl: string;
  prefix: string;
  apiPorts: number[];
  workers: number;
  capacity: number;
  buildScript: string;
  /** Where the process logs and the run files go. */
  dir: string;
}

export class Fleet {
  readonly deaths: Death[] = [];
  readonly exits: Exit[] = [];
  readonly apis: Supervised[];
  readonly workers: Supervised[];

  constructor(readonly options: FleetOptions) {
    const env = (name: string): NodeJS.ProcessEnv => ({
      ...process.env,
      DATABASE_URL: options.databaseUrl(`oculus-chaos-${name}`),
      REDIS_URL: options.redisUrl,
      OCULUS_PREFIX: options.prefix,
      // The load generator submits from one address, faster than a person would.
      OCULUS_RATE_LIMIT: "0",
      OCULUS_LOG_LEVEL: process.env.OCULUS_LOG_LEVEL ?? "info",
    });
    this.apis = options.apiPorts.map(
      (port, i) =>
        new Supervised(
          `up${i + 1}`,
          (name) => ({ role: "up", args: ["--workers", "0", "--port", String(port)], env: env(name) }),
          options.dir,
          this,
        ),
    );
    this.workers = Array.from(
      { length: options.workers },
      (_, i) =>
        new Supervised(
          `w${i + 1}`,
          (name) => ({
            role: "worker",
            args: [
              ...["--command", `bash ${options.buildScript} ${this.runFile(name)} ${name}`],
              ...["--capacity", String(options.capacity), "--id", `chaos-${name}`],
            ],
            env: env(name),
          }),
          options.dir,
          this,
        ),
    );
  }

  runFile(incarnation: string): string {
    return path.join(this.options.dir, `runs-${incarnation}.log`);
  }

  get apiUrls(): string[] {
    return this.options.apiPorts.map((p) => `http://127.0.0.1:${p}`);
  }

  /** Starts everyone at once; resolves when both APIs answer /health and every worker is registered. */
  async start(timeoutMs = 90_000): Promise<void> {
    for (const member of [...this.apis, ...this.workers]) member.start();
    await Promise.all(this.apiUrls.map((url) => waitHealthy(url, timeoutMs)));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const active = await activeWorkers(this.apiUrls[0] as string).catch(() => 0);
      if (active >= this.workers.length) return;
      if (Date.now() > deadline)
        throw new Error(`only ${active} of ${this.workers.length} workers registered`);
      await sleep(200);
    }
  }

  /** Everyone gets SIGTERM (workers first: their builds are handed back), SIGKILL after the grace period. */
  async stop(graceMs = 15_000): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop(graceMs)));
    await Promise.all(this.apis.map((a) => a.stop(graceMs)));
  }
}

/**
 * Why a process died, from the end of its stderr: an uncaught error's message line, else its last
 * error-level log message, else its last line.
 */
export function deathReason(tail: string[]): string {
  const lines = tail.map((l) => l.trim()).filter((l) => l.length > 0 && !l.startsWith("Node.js v"));
  const thrown = lines.filter((l) => /^([A-Za-z]*Error\b|error: |oculus: )/.test(l));
  if (thrown.length > 0) return (thrown[thrown.length - 1] as string).slice(0, 300);
  for (const line of [...lines].reverse()) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
      if ((entry.level ?? 0) >= 50)
        return `${entry.msg ?? ""} ${entry.err?.message ?? ""}`.trim().slice(0, 300);
    } catch {
      // not a log line
    }
  }
  return (lines[lines.length - 1] ?? "(no output)").slice(0, 300);
}

async function waitHealthy(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url}/health did not answer 200 within ${timeoutMs} ms`);
    await sleep(200);
  }
}

async function activeWorkers(url: string): Promise<number> {
  const res = await fetch(`${url}/v1/workers`, { signal: AbortSignal.timeout(2000) });
  const body = (await res.json()) as { workers?: { status?: string }[] };
  return (body.workers ?? []).filter((w) => w.status === "active").length;
}
