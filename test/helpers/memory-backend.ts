// An in-memory KEK backend for unit tests of the broker core: real AES-256-GCM wraps bound to
// their AAD (so tampering and foreign headers fail as on a real token), key versions that
// tests create and delete, per-operation delays and failure switches, and call counters.
// It never replaces the real servers in integration tests.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type {
  ExternalRotation,
  KekBackend,
  KeyVersionInfo,
  UnwrapRequest,
  WrapRequest,
} from '../../src/backends/kek.ts';
import { deadlineExceeded, type Deadline } from '../../src/deadline.ts';
import { BrokerError } from '../../src/errors.ts';

export type Operation = 'open' | 'listVersions' | 'createVersion' | 'wrap' | 'unwrap' | 'probe';

/** What an operation does instead of answering: fail as an outage, never answer, or throw this error. */
export type Failure = 'unavailable' | 'hang' | BrokerError;

export interface MemoryBackendOptions {
  readonly name: string;
  /** Versions the service holds at the start ("1", "2", ...); none by default. */
  readonly versions?: number;
  readonly autoCreate?: boolean;
  readonly externalRotation?: Pick<ExternalRotation, 'intervalMs' | 'stableForMs'>;
}

const MECHANISM = 'memory-aes-gcm';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class MemoryBackend implements KekBackend {
  readonly name: string;
  readonly type = 'memory';
  readonly mechanism = MECHANISM;
  readonly autoCreate: boolean;
  readonly autoCreateOption = 'autoCreate';
  readonly externalRotation?: ExternalRotation;
  /** Calls per operation, counted as they start. */
  readonly calls: Record<Operation, number> = {
    open: 0,
    listVersions: 0,
    createVersion: 0,
    wrap: 0,
    unwrap: 0,
    probe: 0,
  };
  readonly #keys = new Map<string, { key: Buffer; info: KeyVersionInfo }>();
  readonly #delays = new Map<Operation, number>();
  readonly #failures = new Map<Operation, Failure>();
  #next = 1;
  /** The version the service itself calls current (for external rotation). */
  #current: string | undefined;

  constructor(options: MemoryBackendOptions) {
    this.name = options.name;
    this.autoCreate = options.autoCreate ?? true;
    for (let i = 0; i < (options.versions ?? 0); i++) this.addVersion();
    if (options.externalRotation !== undefined) {
      this.externalRotation = {
        ...options.externalRotation,
        latest: async deadline => {
          await this.#enter('listVersions', deadline);
          return this.#info(this.#current ?? '');
        },
      };
    }
  }

  /** Creates a version in the "service", as an operator or another broker would. */
  addVersion(): KeyVersionInfo {
    const version = String(this.#next++);
    const info = {
      version,
      fingerprint: `memory:${this.name}:${randomBytes(4).toString('hex')}`,
      createdAt: new Date(Date.UTC(2026, 0, this.#next)).toISOString(),
    };
    this.#keys.set(version, { key: randomBytes(32), info });
    this.#current = version;
    return info;
  }

  deleteVersion(version: string): void {
    this.#keys.delete(version);
  }

  /** Every later call of `operation` waits this long first (0: no delay). */
  delay(operation: Operation, ms: number): void {
    this.#delays.set(operation, ms);
  }

  /** Every later call of `operation` fails this way, until `heal`. */
  fail(operation: Operation, failure: Failure = 'unavailable'): void {
    this.#failures.set(operation, failure);
  }

  /** Every operation fails this way (the whole service is down), until `heal`. */
  failAll(failure: Failure = 'unavailable'): void {
    for (const operation of Object.keys(this.calls) as Operation[]) this.#failures.set(operation, failure);
  }

  heal(): void {
    this.#failures.clear();
  }

  async open(): Promise<void> {
    await this.#enter('open');
  }

  async listVersions(deadline: Deadline): Promise<KeyVersionInfo[]> {
    await this.#enter('listVersions', deadline);
    return [...this.#keys.values()].map(entry => entry.info);
  }

  async createVersion(deadline: Deadline): Promise<KeyVersionInfo> {
    await this.#enter('createVersion', deadline);
    return this.addVersion();
  }

  async wrap(request: WrapRequest): Promise<Buffer> {
    await this.#enter('wrap', request.deadline);
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key(request.keyVersion), iv);
    cipher.setAAD(request.aad);
    return Buffer.concat([iv, cipher.update(request.plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  async unwrap(request: UnwrapRequest): Promise<Buffer> {
    await this.#enter('unwrap', request.deadline);
    if (request.mechanism !== MECHANISM)
      throw new BrokerError('INVALID_CIPHERTEXT', `unknown mechanism ${request.mechanism}`);
    const { wrapped } = request;
    if (wrapped.length <= IV_BYTES + TAG_BYTES)
      throw new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key is too short');
    const decipher = createDecipheriv(
      'aes-256-gcm',
      this.#key(request.keyVersion),
      wrapped.subarray(0, IV_BYTES),
    );
    decipher.setAAD(request.aad);
    decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(wrapped.subarray(IV_BYTES, wrapped.length - TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key does not authenticate');
    }
  }

  async probe(deadline: Deadline): Promise<void> {
    await this.#enter('probe', deadline);
  }

  async close(): Promise<void> {
    // Nothing to release.
  }

  #key(version: string): Buffer {
    const entry = this.#keys.get(version);
    if (entry === undefined)
      throw new BrokerError('KEY_MISSING', `memory backend ${this.name} has no version ${version}`);
    return entry.key;
  }

  #info(version: string): KeyVersionInfo {
    const entry = this.#keys.get(version);
    if (entry === undefined)
      throw new BrokerError('KEY_MISSING', `memory backend ${this.name} has no version ${version}`);
    return entry.info;
  }

  /** Counts the call, then waits its delay and applies its failure, honouring the deadline. */
  async #enter(operation: Operation, deadline?: Deadline): Promise<void> {
    this.calls[operation]++;
    const failure = this.#failures.get(operation);
    const delayMs = failure === 'hang' ? Infinity : (this.#delays.get(operation) ?? 0);
    if (delayMs > 0) await waitOrAbort(delayMs, deadline?.signal);
    if (failure === 'unavailable') {
      throw new BrokerError('BACKEND_UNAVAILABLE', `memory backend ${this.name} is down`, 'MEMORY_DOWN');
    }
    if (failure instanceof BrokerError) throw failure;
  }
}

/** Waits `ms` (Infinity: forever), or rejects with DEADLINE_EXCEEDED when the signal fires. */
function waitOrAbort(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(deadlineExceeded());
      return;
    }
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
    const onAbort = () => {
      clearTimeout(timer);
      reject(deadlineExceeded());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
  });
}
