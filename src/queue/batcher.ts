/**
 * Group commit: calls made close together (the same turn of the event loop, or while earlier batches
 * are in flight) are written in one statement. Each caller's promise settles only after the batch that
 * holds its item committed, so nothing is acknowledged before it is durable. Under load, batches grow
 * by themselves (items accumulate while `maxInFlight` statements run); when idle, a lone call goes out
 * on the next tick.
 */
interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (reason: unknown) => void;
}

export class Batcher<I, O> {
  private pending: Pending<I, O>[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly flush: (items: I[]) => Promise<O[]>,
    private readonly maxBatch = 1000,
    private readonly maxInFlight = 2,
  ) {}

  run(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.drain();
        });
      }
    });
  }

  private drain(): void {
    while (this.inFlight < this.maxInFlight && this.pending.length > 0) {
      const batch = this.pending.splice(0, this.maxBatch);
      this.inFlight++;
      this.flush(batch.map((p) => p.item))
        .then((results) => {
          batch.forEach((p, i) => {
            p.resolve(results[i] as O);
          });
        })
        .catch((err: unknown) => {
          for (const p of batch) p.reject(err);
        })
        .finally(() => {
          this.inFlight--;
          this.drain();
        });
    }
  }
}
