/**
 * The Redis persistence report as the API shows it (/health, /metrics). The checks themselves live
 * in src/ops; the server only takes a provider that returns the latest report (or undefined while
 * there is none: no Redis, or not checked yet), so it never runs a check on a request's time.
 */
import { z } from "zod";

export type CheckStatus = "pass" | "warn" | "fail";

export interface PersistenceCheck {
  name: string;
  status: CheckStatus;
  value: unknown;
  message: string;
  fix: string | null | undefined;
}

/** The shape of src/ops/persistence-checks.ts's report (kept structural: the API needs no more). */
export interface PersistenceReport {
  status: CheckStatus;
  checks: PersistenceCheck[];
  /** When the checks ran (ISO time). */
  checkedAt?: string;
}

export type PersistenceProvider = () => PersistenceReport | undefined;

const LEVELS: Record<CheckStatus, number> = { pass: 0, warn: 1, fail: 2 };

/** 0 pass, 1 warn, 2 fail (the gauges' encoding). */
export function statusLevel(status: CheckStatus): number {
  return LEVELS[status];
}

const checkStatus = z.enum(["pass", "warn", "fail"]);

export const persistenceReportSchema = z
  .object({
    status: checkStatus,
    checks: z.array(
      z.object({
        name: z.string(),
        status: checkStatus,
        value: z.unknown(),
        message: z.string(),
        fix: z.string().nullable().optional(),
      }),
    ),
    checkedAt: z.string().optional(),
  })
  .meta({ id: "PersistenceReport" });
