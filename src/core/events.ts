/**
 * The build event stream: every state change of a build and its progress, in one order.
 * Events are rows of `build_events` (PostgreSQL is the record); their `id` is the row's bigserial id,
 * so it increases monotonically and a subscriber resumes after the last id it saw.
 */
import type { Build, BuildProgress, BuildStatus } from "./build.js";

/** What a stream event says happened. State changes are named after the status they lead to. */
export const STREAM_EVENT_TYPES = [
  "queued",
  "running",
  "progress",
  "completed",
  "failed",
  "stopping",
  "stopped",
  "requeued",
] as const;
export type StreamEventType = (typeof STREAM_EVENT_TYPES)[number];

/** One event of a build, as subscribers get it. */
export interface BuildEvent {
  kind: "event";
  /** Monotonically increasing across all builds; resume after it with `lastEventId`. */
  id: string;
  buildId: string;
  type: StreamEventType;
  /** The stored event name (submitted, claimed, retry_scheduled, released, removed, superseded, ...). */
  event: string;
  /** The build's status after the event. */
  status: BuildStatus | null;
  fromStatus: BuildStatus | null;
  /** Who caused it: a worker id, "api", "cli", "reaper", a user name. */
  actor: string;
  at: string;
  /** For "progress": the reported progress. */
  progress?: BuildProgress;
  /** Event details (reason, error, retryCount, lease, ...). */
  data: Record<string, unknown> | null;
}

/** The first item of a subscription without `lastEventId`: the current state. */
export interface BuildSnapshot {
  kind: "snapshot";
  /** Resume after this id to get everything that follows the snapshot. */
  id: string;
  /** Per-build subscription: the build. */
  build?: Build;
  /** All-builds subscription: the active builds (running, stopping) and the counts by status. */
  active?: Build[];
  counts?: Record<BuildStatus, number>;
}

export type StreamItem = BuildEvent | BuildSnapshot;

/** Maps a stored event name to its stream type. */
export function streamTypeOf(event: string, toStatus: string | null): StreamEventType {
  switch (event) {
    case "submitted":
      return "queued";
    case "claimed":
      return "running";
    case "progress":
      return "progress";
    case "stop_requested":
      return "stopping";
    case "removed":
    case "superseded":
      return "stopped";
    case "retry_scheduled":
    case "requeued":
    case "released":
    case "retried":
      return "requeued";
    default:
      if (toStatus === "completed" || toStatus === "failed" || toStatus === "stopped") return toStatus;
      return toStatus === "queued" ? "requeued" : "progress";
  }
}

export interface SubscribeOptions {
  /** Only this build's events (the subscription ends after the build's final event). */
  buildId?: string;
  /** Resume: events after this id (no snapshot). */
  lastEventId?: string;
  /** Ends the subscription. */
  signal?: AbortSignal;
}
