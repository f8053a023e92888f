/**
 * A private PostgreSQL server for fault tests and `npm run chaos`: its own `initdb` cluster in a
 * temporary directory, on a free loopback port, trust auth, so that a test may restart it (fast or
 * immediate), stop it for a while, make it read-only, or terminate its backends without touching the
 * machine's shared server.
 *
 * `startReplica()` makes a streaming replica of it (pg_basebackup -R), `synchronous(true)` makes its
 * commits wait for the replica, and `promote()` turns a replica into a primary (a failover).
 *
 * PostgreSQL refuses to run as root: when this process is root, the server runs as the `postgres`
 * user (runuser), which owns the directory. The binaries come from PG_BINDIR, else `pg_config
 * --bindir`, else the newest /usr/lib/postgresql/N/bin.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { freePort } from "../../src/ops/scratch-redis.js";

export interface PgClusterOptions {
  /** Extra `postgres -c` settings (name -> value). */
  settings?: Record<string, string>;
  /** fsync off (default true): tests need no durability against an OS crash, only a fast server. */
  fastAndLoose?: boolean;
}

/** Where initdb, pg_ctl and postgres are; undefined when PostgreSQL's server binaries are not here. */
export function findPgBinDir(): string | undefined {
  const candidates: string[] = [];
  if (process.env.PG_BINDIR) candidates.push(process.env.PG_BINDIR);
  try {
    candidates.push(execFileSync("pg_config", ["--bindir"], { stdio: "pipe" }).toString().trim());
  } catch {
    // pg_config is in libpq-dev, often absent: look where Debian installs the server.
  }
  const debian = "/usr/lib/postgresql";
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(path.join(debian, v, "bin"));
  }
  return candidates.find(
    (dir) => existsSync(path.join(dir, "initdb")) && existsSync(path.join(dir, "pg_ctl")),
  );
}

/** Why a private cluster cannot be started here (undefined: it can). */
export function pgClusterUnavailable(): string | undefined {
  if (!findPgBinDir()) {
    return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: fault tests start private clusters (Debian: apt-get install postgresql, or set PG_BINDIR)";
  }
  if (process.getuid?.() === 0) {
    const user = spawnSync("id", ["-u", "postgres"], { stdio: "pipe" });
    if (user.status !== 0)
      return "running as root, but there is no `postgres` user to run a private PostgreSQL as";
  }
  return undefined;
}

/** A new temporary directory, owned by `postgres` when the server runs as that user. */
function privateDir(asPostgres: boolean): string {
  const dir = mkdtempSync(path.join(tmpdir(), "oculus-pg-"));
  if (asPostgres) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(dir, uid, gid);
  }
  return dir;
}

export class PgCluster {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly binDir: string,
    private readonly asPostgres: boolean,
  ) {}

  /** initdb + start on a free port. Resolves once the server accepts connections. */
  static async start(options: PgClusterOptions = {}): Promise<PgCluster> {
    const unavailable = pgClusterUnavailable();
    if (unavailable) throw new Error(unavailable);
    const binDir = findPgBinDir() as string;
    const asPostgres = process.getuid?.() === 0;
    const dir = privateDir(asPostgres);
    const cluster = new PgCluster(dir, await freePort(), binDir, asPostgres);
    cluster.run("initdb", [
      "-D",
      cluster.dataDir,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--no-sync",
    ]);
    const settings: Record<string, string> = {
      listen_addresses: "127.0.0.1",
      port: String(cluster.port),
      unix_socket_directories: dir,
      max_connections: "100",
      ...(options.fastAndLoose === false ? {} : { fsync: "off", full_page_writes: "off" }),
      ...options.settings,
    };
    cluster.appendSettings(settings);
    cluster.pgCtl(["start"]);
    return cluster;
  }

  /**
   * A streaming replica of this (running) server: pg_basebackup -R (a standby.signal and the
   * primary_conninfo), its own port and socket directory, hot standby (it answers reads; writes fail
   * with 25006). Resolves once it streams from this server. `primaryPort`: where the replica
   * reaches this server (a TcpProxy in front of it, to cut replication); default its own port.
   */
  async startReplica(options: { primaryPort?: number } = {}): Promise<PgCluster> {
    const dir = privateDir(this.asPostgres);
    const replica = new PgCluster(dir, await freePort(), this.binDir, this.asPostgres);
    replica.run("pg_basebackup", [
      "-D",
      replica.dataDir,
      "-h",
      "127.0.0.1",
      "-p",
      String(this.port),
      "-U",
      "postgres",
      "-R",
      "-X",
      "stream",
      "--no-sync",
      "-c",
      "fast",
    ]);
    // The copied postgresql.conf names the primary's port and socket directory; later lines win.
    replica.appendSettings({
      port: String(replica.port),
      unix_socket_directories: dir,
      hot_standby: "on",
    });
    if (options.primaryPort !== undefined) {
      // pg_basebackup ran against the primary itself (it runs synchronously: a proxy in this process
      // could not forward meanwhile); streaming goes through `primaryPort`. postgresql.auto.conf,
      // where -R wrote primary_conninfo, is read last.
      replica.appendSettings(
        { primary_conninfo: `host=127.0.0.1 port=${options.primaryPort} user=postgres` },
        "postgresql.auto.conf",
      );
    }
    replica.pgCtl(["start"]);
    for (let i = 0; i < 600; i++) {
      const rows = await this.sql<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'",
      );
      if ((rows[0]?.n ?? 0) > 0) return replica;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the replica did not start streaming in 30 s");
  }

  /**
   * Synchronous replication on (this is the primary): a commit is acknowledged only once a replica
   * has it (synchronous_standby_names = '*', synchronous_commit = on), so a promotion loses nothing
   * acknowledged. Resolves once a replica is the synchronous one.
   */
  async synchronous(on: boolean): Promise<void> {
    await this.sql(`ALTER SYSTEM SET synchronous_standby_names = '${on ? "*" : ""}'`);
    await this.sql("SELECT pg_reload_conf()");
    for (let i = 0; i < 600; i++) {
      const rows = await this.sql<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_replication WHERE sync_state = 'sync'",
      );
      if ((rows[0]?.n ?? 0) > 0 === on) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`synchronous replication did not turn ${on ? "on" : "off"} in 30 s`);
  }

  /** pg_ctl promote (this is a replica): resolves once it is a primary that takes writes. */
  async promote(): Promise<void> {
    this.pgCtl(["promote"]);
    for (let i = 0; i < 600; i++) {
      const rows = await this.sql<{ standby: boolean }>("SELECT pg_is_in_recovery() AS standby");
      if (rows[0]?.standby === false) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the replica was not promoted in 30 s");
  }

  get dataDir(): string {
    return path.join(this.dir, "data");
  }

  get logFile(): string {
    return path.join(this.dir, "server.log");
  }

  /** A URL for the `postgres` database (or another one). */
  url(database = "postgres"): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** pg_ctl restart: `fast` (clients disconnected, clean shutdown) or `immediate` (a crash: WAL replay). */
  restart(mode: "fast" | "immediate"): void {
    this.pgCtl(["restart", "-m", mode]);
  }

  stop(mode: "fast" | "immediate" = "fast"): void {
    this.pgCtl(["stop", "-m", mode]);
  }

  /** Starts it again on the same port and data (after stop()). */
  startAgain(): void {
    this.pgCtl(["start"]);
  }

  /**
   * Read-only for every new transaction, also in open sessions (as a standby after a failover is):
   * writes fail with 25006. `false` makes it writable again.
   */
  async setReadOnly(readOnly: boolean): Promise<void> {
    await this.sql(`ALTER SYSTEM SET default_transaction_read_only = ${readOnly ? "on" : "off"}`);
    await this.sql("SELECT pg_reload_conf()");
    // A reload reaches other backends at their next command; wait until a new session sees it.
    for (let i = 0; i < 100; i++) {
      const rows = await this.sql<{ ro: string }>(
        "SELECT current_setting('default_transaction_read_only') AS ro",
      );
      if (rows[0]?.ro === (readOnly ? "on" : "off")) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Terminates every backend of `application_name` (or every client backend but this one). */
  async terminateBackends(applicationName?: string): Promise<number> {
    const rows = await this.sql<{ n: number }>(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
         AND ($1::text IS NULL OR application_name = $1)`,
      [applicationName ?? null],
    );
    return rows[0]?.n ?? 0;
  }

  /** One statement on its own connection (fails when the server is down). */
  async sql<T = Record<string, unknown>>(
    text: string,
    params: unknown[] = [],
    database = "postgres",
  ): Promise<T[]> {
    const client = new pg.Client({ connectionString: this.url(database), connectionTimeoutMillis: 5000 });
    client.on("error", () => undefined);
    await client.connect();
    try {
      return (await client.query(text, params)).rows as T[];
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Stops the server (immediately) and deletes its files. */
  destroy(): void {
    try {
      this.pgCtl(["stop", "-m", "immediate"]);
    } catch {
      // already stopped
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Appends `name = 'value'` lines to postgresql.conf or `file` (read at the next start or reload). */
  private appendSettings(settings: Record<string, string>, file = "postgresql.conf"): void {
    const conf = Object.entries(settings)
      .map(([k, v]) => `${k} = '${v}'`)
      .join("\n");
    this.run("sh", ["-c", `printf '%s\\n' "$1" >> "$2"`, "sh", conf, path.join(this.dataDir, file)]);
  }

  private pgCtl(args: string[]): void {
    this.run(path.join(this.binDir, "pg_ctl"), [
      "-D",
      this.dataDir,
      "-l",
      this.logFile,
      "-w",
      "-t",
      "60",
      ...args,
    ]);
  }

  private run(command: string, args: string[]): void {
    const bin = command.includes("/") || command === "sh" ? command : path.join(this.binDir, command);
    const [file, argv] = this.asPostgres ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
    const result = spawnSync(file, argv, { stdio: "pipe", cwd: this.dir });
    if (result.status !== 0) {
      const log = existsSync(this.logFile) ? readFileSync(this.logFile, "utf8").slice(-2000) : "";
      throw new Error(
        `${path.basename(bin)} ${args.join(" ")} failed (${result.status}): ${result.stderr?.toString()}${log ? `\n--- server log ---\n${log}` : ""}`,
      );
    }
  }
}
