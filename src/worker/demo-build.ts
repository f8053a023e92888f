/**
 * The built-in demo build: walks through the Oculus phases so that a new user sees the queue work
 * without writing a handler. It takes `params.stepMs` (default 300) per phase.
 */
import type { ClaimedBuild } from "../core/build.js";

export const OCULUS_PHASES = [
  "designing",
  "training",
  "extracting_rules",
  "optimizing",
  "building_docker",
] as const;

export async function demoBuild(build: ClaimedBuild, signal?: AbortSignal): Promise<unknown> {
  const stepMs = typeof build.params.stepMs === "number" ? build.params.stepMs : 300;
  for (const phase of OCULUS_PHASES) {
    signal?.throwIfAborted();
    await new Promise((resolve) => setTimeout(resolve, stepMs));
    void phase;
  }
  return { phases: OCULUS_PHASES.length, strategyId: build.strategyId };
}
