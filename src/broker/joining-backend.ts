// A backend as the broker holds it: one that may not have been reachable when the broker
// started. A restart during a one-backend outage must not become a no-plugin outage, so the
// broker starts with what it can reach and lets the others join later: until a backend has
// been opened and its versions listed (and accepted by the key set), every call to it fails
// fast as UNAVAILABLE, and each health probe tries to connect it instead.
import type { KekBackend, KeyVersionInfo, UnwrapRequest, WrapRequest } from '../backends/kek.ts';
import { within, type Deadline } from '../deadline.ts';
import { atStartOf, BrokerError, toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Listing } from './state/reconcile.ts';

/** Told of a backend's versions when it connects; a rejection keeps the backend out. */
export type JoinHook = (backend: KekBackend, listed: readonly KeyVersionInfo[]) => Promise<void>;

export class JoiningBackend implements KekBackend {
  readonly #inner: KekBackend;
  #connected = false;
  #connecting: Promise<KeyVersionInfo[]> | undefined;
  #onJoin: JoinHook | undefined;

  constructor(inner: KekBackend) {
    this.#inner = inner;
  }

  get name(): string {
    return this.#inner.name;
  }
  get type(): string {
    return this.#inner.type;
  }
  get mechanism(): string {
    return this.#inner.mechanism;
  }
  get writeOnly(): boolean {
    return this.#inner.writeOnly === true;
  }
  get autoCreate(): boolean {
    return this.#inner.autoCreate;
  }
  get autoCreateOption(): string {
    return this.#inner.autoCreateOption;
  }
  get externalRotation(): KekBackend['externalRotation'] {
    const rotation = this.#inner.externalRotation;
    if (rotation === undefined) return undefined;
    return { ...rotation, latest: deadline => this.#whenConnected(() => rotation.latest(deadline)) };
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** From now on a backend that connects is first offered to `hook`. */
  onJoin(hook: JoinHook): void {
    this.#onJoin = hook;
  }

  /**
   * Opens the backend and lists its versions; one attempt at a time. The backend counts as
   * connected only once the join hook (if any) accepted the listing.
   */
  connect(deadline: Deadline): Promise<KeyVersionInfo[]> {
    this.#connecting ??= this.#connectOnce(deadline).finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connectOnce(deadline: Deadline): Promise<KeyVersionInfo[]> {
    // open() may be tried again after a failure (the KEK contract); close() is final, so a
    // backend that failed to connect is left as it is until the next try.
    await this.#inner.open();
    const listed = await this.#inner.listVersions(deadline);
    await this.#onJoin?.(this, listed);
    this.#connected = true;
    return listed;
  }

  open(): Promise<void> {
    return this.#inner.open();
  }

  listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    return this.#whenConnected(() => this.#inner.listVersions(deadline));
  }

  createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    // Also before joining: the key set may create version 1 of a backend that holds none.
    return this.#inner.createVersion(deadline);
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    return this.#whenConnected(() => this.#inner.wrap(request));
  }

  unwrap(request: UnwrapRequest): Promise<Buffer> {
    return this.#whenConnected(() => this.#inner.unwrap(request));
  }

  /** While not connected, a probe is an attempt to connect. */
  async probe(deadline: Deadline): Promise<void> {
    if (!this.#connected) {
      await this.connect(deadline);
      return;
    }
    await this.#inner.probe(deadline);
  }

  close(): Promise<void> {
    this.#connected = false;
    return this.#inner.close();
  }

  #whenConnected<T>(call: () => Promise<T>): Promise<T> {
    if (this.#connected) return call();
    return Promise.reject(
      new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${this.name} has not been reached since the broker started; it joins when a probe reaches it`,
        'NOT_CONNECTED',
      ),
    );
  }
}

/**
 * Connects every backend it can, in parallel, each within `budgetMs`. A backend that cannot
 * be reached is left to join later, and said so; start-up fails only when none answers or
 * when a failure that stops start-up (the catalog's `atStart`: a wrong PIN, a bug) happens on any.
 */
export async function connectReachable(
  backends: readonly JoiningBackend[],
  budgetMs: number,
  logger: Logger,
): Promise<Map<string, Listing>> {
  const results = await Promise.allSettled(
    backends.map(backend => within(budgetMs, deadline => backend.connect(deadline))),
  );
  const listings = new Map<string, Listing>();
  const failures: BrokerError[] = [];
  results.forEach((result, index) => {
    const backend = backends[index] as JoiningBackend;
    if (result.status === 'fulfilled') {
      listings.set(backend.name, { backend, listed: result.value });
      return;
    }
    const error = toBrokerError(result.reason);
    failures.push(error);
    logger.warn(
      { backend: backend.name, code: error.code, cause: error.causeName, err: error.message },
      'backend unreachable at start; serving without it until it answers',
    );
  });
  const fatal = failures.find(error => atStartOf(error) !== undefined);
  if (fatal !== undefined) throw fatal;
  if (listings.size === 0 && failures[0] !== undefined) throw failures[0];
  return listings;
}
