/**
 * The PostgreSQL connection settings and their defaults, apart from config.ts (which validates them
 * with zod): the worker's heartbeat thread opens its own connection, and loading the validator there
 * would slow the thread's start (measured: a late first heartbeat let a 3 s lease lapse on a loaded
 * machine).
 */
export interface PostgresSettings {
  /** Connecting to PostgreSQL, and waiting for a free pooled connection, gives up after this long. */
  pgConnectTimeoutMs: number;
  /** PostgreSQL's statement_timeout for the queue's sessions (0: none). */
  pgStatementTimeoutMs: number;
  /** PostgreSQL's idle_in_transaction_session_timeout for the queue's sessions (0: none). */
  pgIdleInTransactionTimeoutMs: number;
  /**
   * The client gives up on a statement with no answer after this long (a server or a link that
   * silently stopped answering); by default statement timeout + 5 s (0: none).
   */
  pgQueryTimeoutMs: number;
  /** Callers waiting for a pooled connection beyond this many are refused at once (503, busy). */
  pgMaxWaiting: number;
  /**
   * A claim of popped ids that has not committed after this long is abandoned and the ids go back
   * into the index for another worker (the claim is a proposal until it commits).
   */
  pgClaimTimeoutMs: number;
}

/** The client-side query timeout's margin over the server's statement_timeout. */
export const QUERY_TIMEOUT_MARGIN_MS = 5000;

export const DEFAULT_POSTGRES_SETTINGS: PostgresSettings = {
  pgConnectTimeoutMs: 5000,
  pgStatementTimeoutMs: 30_000,
  pgIdleInTransactionTimeoutMs: 60_000,
  pgQueryTimeoutMs: 30_000 + QUERY_TIMEOUT_MARGIN_MS,
  pgMaxWaiting: 1000,
  pgClaimTimeoutMs: 3000,
};

export function postgresSettingsOf(config: PostgresSettings): PostgresSettings {
  return {
    pgConnectTimeoutMs: config.pgConnectTimeoutMs,
    pgStatementTimeoutMs: config.pgStatementTimeoutMs,
    pgIdleInTransactionTimeoutMs: config.pgIdleInTransactionTimeoutMs,
    pgQueryTimeoutMs: config.pgQueryTimeoutMs,
    pgMaxWaiting: config.pgMaxWaiting,
    pgClaimTimeoutMs: config.pgClaimTimeoutMs,
  };
}
