// Tests that run in order on one cluster, each starting where the last ended: once a step
// fails, every later one fails at once, naming it, instead of running on a state it did not
// expect (and never passes or skips quietly).
import assert from 'node:assert/strict';
import { it } from 'node:test';

/** A `step(name, body)` for one describe block: `it` that knows whether an earlier step failed. */
export function orderedSteps(): (name: string, body: () => Promise<void>) => void {
  let failedStep: string | undefined;
  return (name, body) => {
    it(name, async () => {
      assert.equal(
        failedStep,
        undefined,
        `not run: it would start from the state the failed step "${failedStep}" left`,
      );
      try {
        await body();
      } catch (error) {
        failedStep = name;
        throw error;
      }
    });
  };
}
