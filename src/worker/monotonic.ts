/**
 * Milliseconds on the process's monotonic clock (CLOCK_MONOTONIC through process.hrtime): the same
 * clock in every thread of the process, and unmoved by changes of the wall clock. The lease fence
 * (fence.ts) compares times taken in the heartbeat thread with times taken in the main thread.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
