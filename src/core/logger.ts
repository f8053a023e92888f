import { writeSync } from "node:fs";
import { type DestinationStream, type Logger, pino } from "pino";
import { printable } from "./printable.js";

export type { Logger };

/** Secrets never reach the logs: passwords, tokens, and HTTP Authorization headers wherever logged. */
export const LOG_REDACTION = {
  paths: [
    "*.password",
    "*.token",
    "authorization",
    "*.authorization",
    "req.headers.authorization",
    "headers.authorization",
  ],
  censor: "***",
};

export type LogFormat = "pretty" | "json";

/**
 * OCULUS_LOG_FORMAT: `json` (one JSON object a line, for log collectors) or `pretty` (a readable
 * line: time, level, message, fields). Default: pretty when the logs go to a terminal (stderr is a
 * TTY), JSON otherwise (a file, a pipe, a container's log driver).
 */
export function logFormat(
  env: NodeJS.ProcessEnv = process.env,
  tty = Boolean(process.stderr.isTTY),
): LogFormat {
  const asked = env.OCULUS_LOG_FORMAT?.trim().toLowerCase();
  if (asked === "json" || asked === "pretty") return asked;
  return tty ? "pretty" : "json";
}

/** The process logger: on stderr (stdout stays free for command output), pretty or JSON (logFormat). */
export function createLogger(options: { level?: string; name?: string; format?: LogFormat } = {}): Logger {
  const format = options.format ?? logFormat();
  return pino(
    {
      name: options.name ?? "oculus",
      level: options.level ?? process.env.OCULUS_LOG_LEVEL ?? "info",
      redact: LOG_REDACTION,
    },
    format === "pretty" ? prettyDestination(2) : pino.destination(2),
  );
}

/** A logger that drops everything: the library's default when the caller gives none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

const LEVELS: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
/** Fields every line has, or that say nothing to a person reading a terminal. */
const QUIET_FIELDS = new Set(["level", "time", "pid", "hostname", "name", "msg", "v"]);

/**
 * A pino destination that turns each JSON line into `12:34:56 WARN  message  key=value ...` (pino
 * formats the JSON first: redaction has happened). No transport, no worker thread, no dependency
 * (pino-pretty is not needed for this). Control characters in values are escaped so that a
 * strategy id cannot rewrite the operator's terminal.
 */
export function prettyDestination(fd: number): DestinationStream {
  return {
    write(line: string) {
      writeSync(fd, `${prettyLine(line)}\n`);
    },
  };
}

export function prettyLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.trimEnd();
  }
  const time = typeof entry.time === "number" ? new Date(entry.time).toISOString().slice(11, 19) : "";
  const level = (LEVELS[Number(entry.level)] ?? String(entry.level)).padEnd(5);
  const fields = Object.entries(entry)
    .filter(([key, value]) => !QUIET_FIELDS.has(key) && value !== undefined)
    .map(([key, value]) => `${key}=${fieldText(value)}`);
  return [time, level, printable(String(entry.msg ?? "")), ...fields].filter(Boolean).join("  ").trimEnd();
}

function fieldText(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return printable(/\s/.test(text) && typeof value === "string" ? JSON.stringify(text) : text);
}
