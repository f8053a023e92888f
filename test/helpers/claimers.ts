/**
 * Parent side of test/helpers/claimer-process.ts: starts claimer processes, collects what they report
 * on stdout, and stops them (or kills them, in afterAll, whatever happened).
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { TEST_DATABASE_URL } from "./postgres.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const script = path.join(here, "claimer-process.ts");

export type ClaimerEvent =
  | { type: "ready"; mode: string; pid: number }
  | { type: "mode"; mode: string }
  | { type: "claimed"; id: string; lease: number; mode: string }
  | { type: "completed"; id: string }
  | { type: "error"; op: string; message: string; code: string | null }
  | { type: "closed" };

export interface ClaimerOptions {
  workerId: string;
  schema: string;
  prefix: string;
  redisUrl?: string;
}

export class ClaimerProcess {
  readonly events: ClaimerEvent[] = [];
  readonly stderr: string[] = [];
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  private constructor(
    readonly workerId: string,
    private readonly child: ChildProcess,
  ) {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        this.events.push(JSON.parse(line) as ClaimerEvent);
      } catch {
        this.stderr.push(`(stdout) ${line}`);
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) =>
      this.stderr.push(line),
    );
    this.exited = new Promise((resolve) => {
      child.once("exit", (code) => {
        this.exitCode = code;
        resolve(code);
      });
    });
  }

  static start(options: ClaimerOptions): ClaimerProcess {
    const child = spawn(process.execPath, ["--import", "tsx", script], {
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        CLAIMER_WORKER_ID: options.workerId,
        CLAIMER_SCHEMA: options.schema,
        CLAIMER_PREFIX: options.prefix,
        CLAIMER_DATABASE_URL: TEST_DATABASE_URL,
        CLAIMER_REDIS_URL: options.redisUrl ?? "",
      },
    });
    return new ClaimerProcess(options.workerId, child);
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  get ready(): boolean {
    return this.events.some((e) => e.type === "ready");
  }

  /** The mode last announced (ready, then every mode event). */
  get mode(): string | undefined {
    let mode: string | undefined;
    for (const e of this.events) if (e.type === "ready" || e.type === "mode") mode = e.mode;
    return mode;
  }

  claims(): { id: string; lease: number; mode: string }[] {
    return this.events.filter((e) => e.type === "claimed");
  }

  errors(): { op: string; message: string; code: string | null }[] {
    return this.events.filter((e) => e.type === "error");
  }

  /** Asks the process to stop, and waits for it to exit (then kills it). Resolves to the exit code. */
  async stop(timeoutMs = 20_000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    this.child.stdin?.write("stop\n");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** For afterAll: gone, whatever state it is in. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }

  describe(): string {
    return `${this.workerId}: exit ${String(this.exitCode)}, stderr:\n${this.stderr.slice(-30).join("\n")}`;
  }
}
