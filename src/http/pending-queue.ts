/**
 * The queue an API serves, before it is open. `oculus up` binds its port first and opens the queue
 * afterwards (PostgreSQL may be away at start, and the wait can be long): meanwhile a load balancer
 * must see /health 503, and clients a 503 with Retry-After, not a refused connection.
 *
 * The route modules take the queue when they register, so they are given `stand-in`: it forwards
 * every property to the queue once `fill` has been called, and throws StoreUnavailableError before
 * (server.ts's gate answers every store route before that could happen; the stand-in is the net).
 */
import { StoreUnavailableError } from "../core/errors.js";
import type { BuildQueue } from "../queue/build-queue.js";

export class PendingQueue {
  private queue: BuildQueue | undefined;
  private readonly onFill: ((queue: BuildQueue) => void)[] = [];
  /** Forwards to the queue once filled; throws StoreUnavailableError before. */
  readonly standIn: BuildQueue;

  /** `hasRedis`: whether Redis is configured (shown by /health while the queue is not open). */
  constructor(readonly hasRedis: boolean) {
    // Methods are bound once (the routes call them on every request); the queue never changes.
    const bound = new Map<PropertyKey, { of: unknown; method: unknown }>();
    this.standIn = new Proxy({} as BuildQueue, {
      get: (_target, property) => {
        const queue = this.require();
        const value = Reflect.get(queue, property, queue) as unknown;
        if (typeof value !== "function") return value;
        let entry = bound.get(property);
        if (entry?.of !== value) {
          entry = { of: value, method: value.bind(queue) };
          bound.set(property, entry);
        }
        return entry.method;
      },
    });
  }

  /** A slot already holding `queue` (buildServer called with an open queue). */
  static of(queue: BuildQueue): PendingQueue {
    const slot = new PendingQueue(queue.hasRedis);
    slot.fill(queue);
    return slot;
  }

  /** The queue, or undefined while it is not open yet. */
  get current(): BuildQueue | undefined {
    return this.queue;
  }

  /** The queue is open: the API serves it from now on. */
  fill(queue: BuildQueue): void {
    if (this.queue) throw new Error("PendingQueue filled twice");
    this.queue = queue;
    for (const callback of this.onFill.splice(0)) callback(queue);
  }

  /** Calls `callback` with the queue once it is open (at once if it is). */
  whenFilled(callback: (queue: BuildQueue) => void): void {
    if (this.queue) callback(this.queue);
    else this.onFill.push(callback);
  }

  private require(): BuildQueue {
    if (!this.queue) throw new StoreUnavailableError("the queue is not open yet: waiting for PostgreSQL");
    return this.queue;
  }
}
