// A cap on the connections one listener holds. Every connection costs a file descriptor, and
// the process has one pool of them for the KMS socket, the admin API, the backends and the
// state file: a flood of idle connections to one listener must not starve the others.
//
// At the cap, the guard closes the connection that has been idle longest, not the newest
// one: a flood of silent connections then cannot lock out a well-behaved client, whose new
// connection gets in and becomes active at once. Only when every other connection is busy
// is the new one refused. Refusals are logged, at most once per LOG_INTERVAL_MS.
import type { Socket } from 'node:net';
import type { Logger } from './log.ts';

const LOG_INTERVAL_MS = 10_000;

export interface ConnectionGuardOptions {
  /** Named in the log line: `kms` or `admin`. */
  readonly listener: string;
  readonly limit: number;
  readonly logger: Logger;
}

export class ConnectionGuard {
  readonly #options: ConnectionGuardOptions;
  /** Connections doing nothing the broker would lose by closing them, longest idle first. */
  readonly #idle = new Set<Socket>();
  readonly #active = new Set<Socket>();
  #closedSinceLog = 0;
  #lastLogAt = -Infinity;
  #logTimer: NodeJS.Timeout | undefined;

  constructor(options: ConnectionGuardOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#idle.size + this.#active.size;
  }

  /** Takes in a new connection (idle until marked active); at the cap, closes one. */
  admit(socket: Socket): void {
    this.#idle.add(socket);
    socket.once('close', () => this.#forget(socket));
    if (this.size <= this.#options.limit) return;
    // Never empty here: the new connection itself is idle (and is the one closed when
    // every other connection is active).
    const [longestIdle = socket] = this.#idle;
    // Forgotten at once, not at its 'close' event, so that a burst of connections within
    // one tick does not count it again and close more than the excess.
    this.#forget(longestIdle);
    longestIdle.destroy();
    this.noteClosed();
  }

  active(socket: Socket): void {
    if (this.#idle.delete(socket)) this.#active.add(socket);
  }

  idle(socket: Socket): void {
    // Re-adding puts it last: it is now the most recently idle.
    if (this.#active.delete(socket) || this.#idle.delete(socket)) this.#idle.add(socket);
  }

  #forget(socket: Socket): void {
    this.#idle.delete(socket);
    this.#active.delete(socket);
  }

  /**
   * Closes the idle connections (at shutdown: they hold no work, and would otherwise keep
   * the listener from closing until their timeouts), and logs what is still uncounted.
   */
  closeIdle(): void {
    for (const socket of this.#idle) socket.destroy();
    if (this.#closedSinceLog > 0) this.#log();
  }

  /** Counts a connection closed for the cap (also those the TCP layer refused). */
  noteClosed(): void {
    this.#closedSinceLog++;
    const wait = this.#lastLogAt + LOG_INTERVAL_MS - performance.now();
    if (wait <= 0) this.#log();
    else this.#logTimer ??= setTimeout(() => this.#log(), wait).unref();
  }

  #log(): void {
    clearTimeout(this.#logTimer);
    this.#logTimer = undefined;
    this.#lastLogAt = performance.now();
    const { listener, limit, logger } = this.#options;
    logger.warn(
      { listener, limit, closed: this.#closedSinceLog },
      'connection limit reached; closed the longest-idle connections',
    );
    this.#closedSinceLog = 0;
  }
}
