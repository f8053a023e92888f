export * from "./core/build.js";
export { type Config, loadConfig } from "./core/config.js";
export * from "./core/errors.js";
export * from "./core/events.js";
export { decodeScore, encodeScore, PRIORITY_MAX, PRIORITY_MIN, SEQ_MAX } from "./core/score.js";
export { migrate } from "./postgres/migrate.js";
export {
  BuildQueue,
  type BuildPage,
  type BuildQueueOptions,
  type EventStream,
  type ListOptions,
  type QueueMode,
  type SubmitOneResult,
  type SubmitResult,
} from "./queue/build-queue.js";
export type { ReconcileReport } from "./queue/reconciler.js";
export type { HealthPolicy, ReapReport, WorkerStatus, WorkerView } from "./queue/workers.js";
export { redisKeys } from "./redis/keys.js";
export { type BuildHandler, runClaimLoop } from "./worker/claim-loop.js";
export { commandHandler } from "./worker/command-handler.js";
export { type CommandResult, type ProgressUpdate, runBuildCommand } from "./worker/command-runner.js";
export {
  BuildAbandoned,
  type BuildContext,
  Worker,
  type WorkerHandler,
  type WorkerOptions,
} from "./worker/worker.js";
