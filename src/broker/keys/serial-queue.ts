// Changes to the key set run one at a time (an admin change, a reload of the stored state,
// a usage flush), so two never race to the same version number or overwrite each other's
// commit. KMS calls never enter this queue.
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(change: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(change);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** Settles once everything queued so far has run. */
  drain(): Promise<void> {
    return this.#tail.then(() => undefined);
  }
}
