/**
 * Benchmark child processes: a bench script run by the same Node.js, from dist/ (the .js next to
 * this file) or, when the benchmark itself runs from source through tsx, from the .ts source.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { within } from "./stats.js";

/** Spawns `bench/<name>` with `args`, stdio piped. `withoutRedisUrl`: the child decides its own mode. */
export function spawnBenchScript(
  name: string,
  args: string[],
  options: { withoutRedisUrl?: boolean } = {},
): ChildProcess {
  const fromSource = import.meta.url.endsWith(".ts");
  const script = fileURLToPath(new URL(`./${name}${fromSource ? ".ts" : ".js"}`, import.meta.url));
  const nodeArgs = fromSource ? ["--import", "tsx", script] : [script];
  const env = { ...process.env };
  if (options.withoutRedisUrl) delete env.REDIS_URL;
  return spawn(process.execPath, [...nodeArgs, ...args], { stdio: ["pipe", "pipe", "pipe"], env });
}

/** SIGKILL, and wait (at most 10 s) until it has exited. */
export async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await within(exited, 10_000, "child exit").catch(() => undefined);
}

/** Kills every child in `children` (a part's cleanup, also on errors and SIGINT). */
export async function killChildren(children: Set<ChildProcess>): Promise<void> {
  await Promise.all([...children].map((child) => killChild(child)));
}

/** A bench script in a child process, talking in lines: commands on stdin, `word rest` on stdout. */
export class LineChild {
  private readonly child: ChildProcess;
  private readonly seen = new Map<string, string[]>();
  private readonly waiters = new Map<
    string,
    { resolve: (rest: string) => void; reject: (e: Error) => void }
  >();
  private readonly exited: Promise<void>;
  private stderrTail: string[] = [];
  private stderrLines = 0;

  /** `children`: the caller's registry of live children, for its cleanup (killChildren). */
  constructor(
    readonly name: string,
    script: string,
    args: string[],
    log: (line: string) => void,
    private readonly children: Set<ChildProcess>,
  ) {
    this.child = spawnBenchScript(script, args, { withoutRedisUrl: true });
    children.add(this.child);
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    void this.exited.then(() => {
      this.children.delete(this.child);
      const why = new Error(`${name} exited: ${this.stderrTail.join(" | ")}`);
      for (const w of this.waiters.values()) w.reject(why);
      this.waiters.clear();
    });
    this.child.on("error", (err) => log(`    ${name} error: ${err.message}`));
    this.child.stdin?.on("error", () => undefined);
    createInterface({ input: this.child.stdout as NodeJS.ReadableStream }).on("line", (text) => {
      const space = text.indexOf(" ");
      const word = space < 0 ? text : text.slice(0, space);
      const rest = space < 0 ? "" : text.slice(space + 1);
      if (word === "error") {
        const err = new Error(`${name}: ${rest}`);
        for (const w of this.waiters.values()) w.reject(err);
        this.waiters.clear();
        log(`    [${name}] error ${rest}`);
        return;
      }
      const waiter = this.waiters.get(word);
      if (waiter) {
        this.waiters.delete(word);
        waiter.resolve(rest);
      } else this.seen.set(word, [...(this.seen.get(word) ?? []), rest]);
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on("line", (text) => {
      this.stderrTail = [...this.stderrTail.slice(-9), text];
      this.stderrLines += 1;
      if (this.stderrLines <= 20) log(`    [${name}] ${text.slice(0, 400)}`);
      else if (this.stderrLines === 21) log(`    [${name}] (further stderr lines not shown)`);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The rest of the next line starting with `word`. */
  next(word: string, ms: number): Promise<string> {
    const found = new Promise<string>((resolve, reject) => {
      const queued = this.seen.get(word);
      if (queued && queued.length > 0) {
        resolve(queued.shift() as string);
        return;
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        reject(new Error(`${this.name} has exited: ${this.stderrTail.join(" | ")}`));
        return;
      }
      this.waiters.set(word, { resolve, reject });
    });
    return within(found, ms, `"${word}" from ${this.name}`).finally(() => this.waiters.delete(word));
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** Sends `line` and waits for the reply starting with `word`. */
  ask(line: string, word: string, ms: number): Promise<string> {
    const reply = this.next(word, ms);
    this.send(line);
    return reply;
  }

  /** Closes its stdin (it shuts down and exits), then SIGKILL after `ms`. */
  async stop(ms = 8000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end();
    await within(this.exited, ms, `${this.name} exit`).catch(() => killChild(this.child));
  }
}
