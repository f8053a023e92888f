/** Small statistics helpers (nearest-rank percentiles). */

export interface Distribution {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? Number.NaN;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length % 2 === 1) return sorted[mid] ?? Number.NaN;
  return ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export function distribution(values: number[]): Distribution {
  const sorted = [...values].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length > 0 ? sum / sorted.length : Number.NaN,
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects when `promise` has not settled after `ms` (a stalled run must not hang the benchmark). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Nearest-rank percentiles of a Float64Array (sorted in place), as distribution() computes them (for millions of samples). */
export function distributionOf(values: Float64Array): Distribution {
  const sorted = values.sort();
  const n = sorted.length;
  const at = (p: number) =>
    n === 0 ? Number.NaN : (sorted[Math.min(n, Math.max(1, Math.ceil((p / 100) * n))) - 1] ?? Number.NaN);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: n,
    p50: at(50),
    p95: at(95),
    p99: at(99),
    max: n === 0 ? Number.NaN : (sorted[n - 1] ?? Number.NaN),
    mean: n === 0 ? Number.NaN : sum / n,
  };
}
