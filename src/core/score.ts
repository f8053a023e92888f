/**
 * The dispatch order as one exact integer, so that a Redis sorted set (whose scores are IEEE doubles)
 * orders builds exactly: higher priority first, then submit order (the sequence number).
 *
 *   score = (PRIORITY_MAX - priority) * 2^SEQ_BITS + seq
 *
 * Priority takes 11 bits (2,001 values in 2^11 = 2,048) and the sequence 42 bits, so every score is
 * an integer below 2^53 and survives the double conversion exactly. ZPOPMIN then pops the highest
 * priority, and within one priority the lowest sequence number (the oldest submit). A requeued
 * build keeps its sequence number, so it returns to the front of its priority.
 */
export const PRIORITY_MIN = -1000;
export const PRIORITY_MAX = 1000;
export const SEQ_BITS = 42;
/** Largest sequence number a score can carry: 4,398,046,511,103 builds. */
export const SEQ_MAX = 2 ** SEQ_BITS - 1;
const SEQ_SPAN = 2 ** SEQ_BITS;

export function encodeScore(priority: number, seq: number): number {
  if (!Number.isInteger(priority) || priority < PRIORITY_MIN || priority > PRIORITY_MAX) {
    throw new RangeError(`priority ${priority} is outside ${PRIORITY_MIN}..${PRIORITY_MAX}`);
  }
  if (!Number.isInteger(seq) || seq < 1 || seq > SEQ_MAX) {
    throw new RangeError(`sequence number ${seq} is outside 1..${SEQ_MAX}`);
  }
  return (PRIORITY_MAX - priority) * SEQ_SPAN + seq;
}

export function decodeScore(score: number): { priority: number; seq: number } {
  const seq = score % SEQ_SPAN;
  return { priority: PRIORITY_MAX - (score - seq) / SEQ_SPAN, seq };
}
