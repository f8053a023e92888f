/**
 * The built-in demo build: walks through the Oculus phases with progress, so that a new user sees the
 * queue work without writing a handler. It takes `params.stepMs` (default 300) per phase.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { BuildContext } from "./worker.js";

export const OCULUS_PHASES = [
  "designing",
  "training",
  "extracting_rules",
  "optimizing",
  "building_docker",
] as const;

export async function demoBuild(ctx: BuildContext): Promise<unknown> {
  const stepMs = typeof ctx.build.params.stepMs === "number" ? ctx.build.params.stepMs : 300;
  for (const [i, phase] of OCULUS_PHASES.entries()) {
    ctx.signal.throwIfAborted();
    await ctx.progress({ phase, percent: Math.round((i / OCULUS_PHASES.length) * 100) });
    ctx.log(`${phase}...`);
    // Abortable: a stop during a phase (the last one too) ends the build as stopped; a plain sleep
    // let it finish its last phase and be recorded as completed although a stop had been asked.
    await sleep(stepMs, undefined, { signal: ctx.signal });
  }
  await ctx.progress({ phase: "done", percent: 100 });
  return { image: `oculus/${ctx.build.strategyId}:demo`, phases: OCULUS_PHASES.length };
}
