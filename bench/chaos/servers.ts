/**
 * The chaos suite's stores: one private PostgreSQL cluster (its own initdb, fsync on, so the figures
 * are those of a durable server) and one private redis-server (AOF everysec, DEBUG allowed), shared by
 * every phase; each phase gets a database and a Redis key prefix of its own, so that no phase sees
 * another's rows or keys.
 *
 * The application connects as a non-superuser role (`oculus`), as in production: superuser_reserved
 * connections stay out of its reach (the pool-exhaustion phase depends on it) and the faults that
 * terminate "the app's backends" pick them by role, never the harness's own connections.
 *
 * pg_ctl runs asynchronously here (PgCluster's own methods block): a restart must not freeze the load
 * generator and the clocks of the measurement in this process.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { RedisProcess } from "../../src/ops/scratch-redis.js";
import { findPgBinDir, PgCluster } from "../../test/helpers/pg-cluster.js";

export const APP_ROLE = "oculus";
/** application_name of the harness's own connections (never terminated by a fault). */
export const HARNESS_APP_NAME = "oculus-chaos-harness";

export class ChaosPostgres {
  private readonly onExit = () => this.cluster.destroy();

  private constructor(readonly cluster: PgCluster) {
    // A harness that dies (or is interrupted) takes its server along: destroy() is synchronous.
    process.once("exit", this.onExit);
  }

  static async start(): Promise<ChaosPostgres> {
    const cluster = await PgCluster.start({
      fastAndLoose: false,
      settings: { max_connections: "100", superuser_reserved_connections: "3" },
    });
    const server = new ChaosPostgres(cluster);
    await cluster.sql(`CREATE ROLE ${APP_ROLE} LOGIN`);
    return server;
  }

  get maxConnections(): number {
    return 100;
  }

  /** A fresh database owned by the application role (the app's migrations create its schema there). */
  async createDatabase(name: string): Promise<void> {
    await this.cluster.sql(`CREATE DATABASE ${name} OWNER ${APP_ROLE}`);
  }

  /** The URL the oculus processes use: the app role, named so that pg_stat_activity tells who is who. */
  appUrl(database: string, applicationName: string): string {
    return `postgres://${APP_ROLE}@127.0.0.1:${this.cluster.port}/${database}?application_name=${encodeURIComponent(applicationName)}`;
  }

  /** A superuser client of the harness (the caller ends it). */
  async client(database: string, connectionTimeoutMillis = 5000): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.cluster.url(database),
      application_name: HARNESS_APP_NAME,
      connectionTimeoutMillis,
    });
    client.on("error", () => undefined);
    await client.connect();
    return client;
  }

  /** One statement on a connection of its own, as the harness superuser. */
  async sql<T = Record<string, unknown>>(
    database: string,
    text: string,
    params: unknown[] = [],
  ): Promise<T[]> {
    const client = await this.client(database);
    try {
      return (await client.query(text, params)).rows as T[];
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** pg_ctl (restart -m MODE, stop -m MODE, start) without blocking this process's event loop. */
  pgCtl(args: string[]): Promise<void> {
    const binDir = findPgBinDir() as string;
    const cluster = this.cluster;
    const argv = [
      path.join(binDir, "pg_ctl"),
      ...["-D", cluster.dataDir, "-l", cluster.logFile, "-w", "-t", "120", ...args],
    ];
    const [file, fileArgs] =
      process.getuid?.() === 0
        ? ["runuser", ["-u", "postgres", "--", ...argv]]
        : [argv[0] as string, argv.slice(1)];
    return new Promise((resolve, reject) => {
      const child = spawn(file, fileArgs, { stdio: ["ignore", "ignore", "pipe"], cwd: cluster.dir });
      let stderr = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      child.once("error", reject);
      child.once("exit", (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`pg_ctl ${args.join(" ")} failed (${code}): ${stderr.trim()}`)),
      );
    });
  }

  /** True when the server answers. */
  async up(): Promise<boolean> {
    try {
      await this.sql("postgres", "SELECT 1");
      return true;
    } catch {
      return false;
    }
  }

  /** Starts the server again if a phase left it stopped. */
  async ensureUp(): Promise<void> {
    if (await this.up()) return;
    await this.pgCtl(["start"]).catch(() => undefined);
    if (!(await this.up())) throw new Error("the private PostgreSQL does not come back");
  }

  destroy(): void {
    process.removeListener("exit", this.onExit);
    this.cluster.destroy();
  }
}

/** A private redis-server with AOF everysec (the production setting) and DEBUG allowed (DEBUG SLEEP). */
export class ChaosRedis extends RedisProcess {
  static async start(): Promise<ChaosRedis> {
    const dir = mkdtempSync(path.join(tmpdir(), "oculus-chaos-redis-"));
    const args = [
      ...["--appendonly", "yes", "--appendfsync", "everysec"],
      ...["--enable-debug-command", "yes", "--maxmemory", "0"],
    ];
    return ChaosRedis.startIn(dir, { args, timeoutMs: 60_000, killOnExit: true }).catch((err) => {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    });
  }

  /** One command on a client of its own (no retries: a failure shows at once). */
  async command(...args: (string | number)[]): Promise<unknown> {
    const client = this.client({ maxRetriesPerRequest: 0, commandTimeout: 15_000 });
    try {
      return await client.call(String(args[0]), ...args.slice(1).map(String));
    } finally {
      client.disconnect();
    }
  }

  async usedMemory(): Promise<number> {
    const info = String(await this.command("INFO", "memory"));
    return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
  }

  async version(): Promise<string> {
    const info = String(await this.command("INFO", "server"));
    return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
  }

  /** Restarts the server if a phase left it dead, and lifts any memory limit a phase left set. */
  async ensureUp(): Promise<void> {
    try {
      await this.command("PING");
    } catch {
      await this.kill();
      await this.restart();
    }
    await this.command("CONFIG", "SET", "maxmemory", "0");
  }
}
