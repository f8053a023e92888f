/**
 * Property test of dispatch order: random sequences of submits (many builds of few priorities in one
 * statement, so within one millisecond), claims and removals, against a simple model (a list sorted
 * by priority, then submit order). Every claim must return exactly the model's next builds, and
 * positions and the length must match, on the Redis path and on the PostgreSQL path.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildQueue } from "../../src/index.js";
import { backends } from "../helpers/backends.js";

interface ModelBuild {
  id: string;
  priority: number;
  seq: number;
}

type Command =
  | { kind: "submit"; priorities: number[] }
  | { kind: "claim"; count: number }
  | { kind: "remove"; pick: number }
  | { kind: "position"; pick: number };

const priority = fc.constantFrom(-1000, -1, 0, 0, 0, 1, 7, 1000);
const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("submit"),
      priorities: fc.array(priority, { minLength: 1, maxLength: 25 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("claim"), count: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("remove"), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("position"), pick: fc.nat() }) },
) as fc.Arbitrary<Command>;

const byDispatchOrder = (a: ModelBuild, b: ModelBuild) => b.priority - a.priority || a.seq - b.seq;

async function run(queue: BuildQueue, commands: Command[]): Promise<void> {
  // Start from an empty queue.
  for (let c = await queue.claim("reset", 1000); c.length > 0; c = await queue.claim("reset", 1000)) {
    await Promise.all(c.map((b) => queue.complete(b.id, b.lease)));
  }
  let model: ModelBuild[] = [];
  for (const cmd of commands) {
    if (cmd.kind === "submit") {
      const results = await queue.submitMany(
        cmd.priorities.map((p) => ({ strategyId: "prop", priority: p })),
      );
      model.push(...results.map((r) => ({ id: r.build.id, priority: r.build.priority, seq: r.build.seq })));
      model.sort(byDispatchOrder);
    } else if (cmd.kind === "claim") {
      const claimed = await queue.claim("prop-worker", cmd.count);
      const expected = model.slice(0, cmd.count);
      expect(claimed.map((b) => b.id)).toEqual(expected.map((b) => b.id));
      model = model.slice(cmd.count);
      await Promise.all(claimed.map((b) => queue.complete(b.id, b.lease)));
    } else if (model.length > 0) {
      const index = cmd.pick % model.length;
      const target = model[index] as ModelBuild;
      if (cmd.kind === "remove") {
        await queue.remove(target.id);
        model.splice(index, 1);
      } else {
        expect(await queue.position(target.id)).toBe(index + 1);
      }
    }
    expect(await queue.length()).toBe(model.length);
  }
}

describe.each(backends().filter((b) => b.name !== "pglite"))("dispatch order on $name", (backend) => {
  let queue: BuildQueue;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ queue, cleanup } = await backend.open(`order_${backend.name}`));
  });
  afterAll(async () => {
    await cleanup?.();
    await backend.teardown();
  });

  it("matches the priority + FIFO model for random submit / claim / remove sequences", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 30 }), (commands) =>
        run(queue, commands),
      ),
      { numRuns: 100 },
    );
  });
});
