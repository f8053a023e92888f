import { type Logger, pino } from "pino";

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

/** The process logger: JSON lines on stderr (stdout stays free for command output). */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: options.name ?? "oculus",
      level: options.level ?? process.env.OCULUS_LOG_LEVEL ?? "info",
      redact: LOG_REDACTION,
    },
    pino.destination(2),
  );
}

/** A logger that drops everything: the library's default when the caller gives none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
