import { type Logger, pino } from "pino";

export type { Logger };

/** The process logger: JSON lines on stderr (stdout stays free for command output). */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? "oculus",
      level: options.level ?? process.env.OCULUS_LOG_LEVEL ?? "info",
      redact: { paths: ["*.password", "*.token", "authorization"], censor: "***" },
    },
    pino.destination(2),
  );
}

/** A logger that drops everything: the library's default when the caller gives none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
