export * from "./core/build.js";
export * from "./core/concurrency.js";
export { type Config, loadConfig } from "./core/config.js";
export * from "./core/errors.js";
export * from "./core/events.js";
export { DEFAULT_POOL, MAX_REQUIRES, poolIdOf, type Requirements, satisfies } from "./core/pools.js";
export {
  DEFAULT_TIMEZONE,
  MAX_MISSED_COUNT,
  SCHEDULE_NAME_PATTERN,
  SCHEDULE_PARAMS_KEY,
  type Schedule,
  type ScheduleDefinitionInput,
  type ScheduleInput,
} from "./core/schedule.js";
export { decodeScore, encodeScore, PRIORITY_MAX, PRIORITY_MIN, SEQ_MAX } from "./core/score.js";
export {
  type AuthConfig,
  authConfig,
  loadAuthConfig,
  type Scope,
  type TokenSpec,
} from "./http/auth.js";
export {
  buildServer,
  listenApi,
  type RateLimitOptions,
  type ServerOptions,
} from "./http/server.js";
export {
  type BackupOptions,
  type BackupResult,
  backupRedis,
} from "./ops/backup.js";
export {
  type CheckStatus,
  checkPersistence,
  checkStatusCode,
  type PersistenceCheck,
  type PersistenceCheckOptions,
  type PersistenceReport,
} from "./ops/persistence-checks.js";
export {
  DEFAULT_PERSISTENCE_INTERVAL_MS,
  PersistenceMonitor,
  type PersistenceMonitorOptions,
} from "./ops/persistence-monitor.js";
export { checkPostgres, checkQueueIndex } from "./ops/queue-checks.js";
export { type VerifyOptions, type VerifyReport, verifyBackup } from "./ops/verify-backup.js";
export type { LogChunkInput, LogState, LogStream, StoredLogChunk } from "./postgres/log-store.js";
export { migrate } from "./postgres/migrate.js";
export {
  type BuildPage,
  BuildQueue,
  type BuildQueueOptions,
  type CompleteOptions,
  DEFAULT_LOG_MAX_BYTES,
  type EventStream,
  type FailOptions,
  type ListOptions,
  type PoolView,
  type QueueMode,
  type ResultOptions,
  type SubmitOneResult,
  type SubmitResult,
} from "./queue/build-queue.js";
export type { ReconcileReport } from "./queue/reconciler.js";
export type { PruneOptions, PruneReport } from "./queue/retention.js";
export type { ScheduledTick, SchedulerOptions, Schedules } from "./queue/scheduler.js";
export type { HealthPolicy, ReapReport, WorkerStatus, WorkerView } from "./queue/workers.js";
export { redisKeys } from "./redis/keys.js";
export {
  BUILD_ENV_ALLOWLIST,
  buildBaseEnv,
  QUEUE_SECRETS,
} from "./worker/build-env.js";
export { type BuildHandler, runClaimLoop } from "./worker/claim-loop.js";
export { type CommandHandlerOptions, commandHandler } from "./worker/command-handler.js";
export { type CommandResult, type ProgressUpdate, runBuildCommand } from "./worker/command-runner.js";
export {
  BuildAbandoned,
  type BuildContext,
  Worker,
  type WorkerHandler,
  type WorkerOptions,
} from "./worker/worker.js";
