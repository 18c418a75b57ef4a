// What can unwrap a stored seed: each configured backend alone, and the escrow private key
// rebuilt from its shares. Every wrap of a value is tried with its own source, never falling
// back to another, so the drill can say which sources each value depends on. Results are
// cached per DEK ciphertext: the apiserver reuses one seed for every write until key_id
// changes, so thousands of values cost a few dozen backend calls. Seeds stay in memory only.
import { writeOnlyBackends } from '../backends/kinds.ts';
import { createBackends } from '../backends/registry.ts';
import type { KekBackend } from '../backends/kek.ts';
import { commitsTo, type ParsedEnvelope } from '../broker/envelope.ts';
import { loadConfigFile } from '../config/load.ts';
import { within, withSignal } from '../deadline.ts';
import { isBrokerError } from '../errors.ts';
import { ESCROW_MECHANISM, openFromEscrow } from '../escrow/hybrid-wrap.ts';
import type { EscrowPrivateKey } from '../escrow/key-files.ts';
import { escrowKeyFromFiles } from '../escrow/key-from-files.ts';
import type { Logger } from '../log.ts';
import { readSecret } from '../secrets.ts';
import type { BrokerValue } from './stored-value.ts';

/** The name escrow wraps are counted under, whatever the escrow backend is called. */
export const ESCROW_SOURCE = 'escrow';
const SEED_BYTES = 32;
const OPEN_BUDGET_MS = 20_000;
const UNWRAP_BUDGET_MS = 15_000;
/** Seeds kept at once; KMS v1 has one per value, so the cache must not grow with the cluster. */
const MAX_CACHED_SEEDS = 10_000;

export interface Escrow {
  readonly privateKey: EscrowPrivateKey;
  readonly fingerprint: string;
}

export interface Sources {
  /** Every configured backend by name, in config order; the opened ones as KekBackends. */
  readonly backends: ReadonlyMap<string, { readonly backend?: KekBackend; readonly unreachable?: string }>;
  readonly escrow?: Escrow | undefined;
  /** The config's `escrow` backends: write-only, their wraps open only with the shares (`escrow`). */
  readonly escrowBackends?: readonly string[];
  close(): Promise<void>;
}

/** What the sources made of one seed. */
export interface SeedOutcome {
  /** Sources that alone unwrapped a seed its header commits to. */
  readonly recoveredBy: readonly string[];
  /** Per wrap that did not: its source and why. */
  readonly failures: readonly { readonly source: string; readonly reason: string }[];
  /** Absent when no source recovered it. */
  readonly seed?: Buffer;
}

/** Builds and opens every backend of the broker config; one that cannot be opened is reported, not fatal. */
export async function openSources(
  configPath: string | undefined,
  escrow: Escrow | undefined,
  logger: Logger,
): Promise<Sources> {
  const backends = new Map<string, { backend?: KekBackend; unreachable?: string }>();
  const escrowBackends: string[] = [];
  if (configPath !== undefined) {
    const { config, readFile } = loadConfigFile(configPath);
    // An escrow backend never unwraps (no broker holds its private key): its wraps are the
    // escrow source's, opened with the shares, so it is not opened as a backend.
    const writeOnly = writeOnlyBackends(config.backends);
    escrowBackends.push(...writeOnly);
    const unwrapping = config.backends.filter(backend => !writeOnly.has(backend.name));
    const built = await createBackends(unwrapping, { readSecret, readFile, logger });
    await Promise.all(
      [...built.values()].map(async backend => {
        try {
          await within(OPEN_BUDGET_MS, deadline => withSignal(backend.open(), deadline.signal));
          backends.set(backend.name, { backend });
        } catch (error) {
          backends.set(backend.name, { unreachable: reasonOf(error) });
        }
      }),
    );
    // Config order, whatever order they opened in.
    const ordered = new Map(unwrapping.map(({ name }) => [name, backends.get(name) ?? {}]));
    backends.clear();
    for (const [name, entry] of ordered) backends.set(name, entry);
  }
  return {
    backends,
    escrow,
    escrowBackends,
    async close() {
      await Promise.all(
        [...backends.values()].flatMap(({ backend }) =>
          backend === undefined ? [] : [backend.close().catch(() => undefined)],
        ),
      );
    },
  };
}

/** Rebuilds the escrow private key from its shares, checked against the public key file. */
export async function loadEscrow(publicKeyFile: string, shareFiles: readonly string[]): Promise<Escrow> {
  const { privateKey, fingerprint } = await escrowKeyFromFiles(publicKeyFile, shareFiles);
  return { privateKey, fingerprint };
}

/** Unwraps seeds, once per DEK ciphertext, and counts the backend calls it made. */
export class SeedUnwrapper {
  readonly #sources: Sources;
  readonly #cache = new Map<string, SeedOutcome>();
  #backendCalls = 0;

  constructor(sources: Sources) {
    this.#sources = sources;
  }

  get backendCalls(): number {
    return this.#backendCalls;
  }

  /** The outcome for a value's seed, and whether this is the first value of that seed seen. */
  async outcome(value: BrokerValue): Promise<{ outcome: SeedOutcome; first: boolean }> {
    const cached = this.#cache.get(value.seedId);
    if (cached !== undefined) return { outcome: cached, first: false };
    const recoveredBy: string[] = [];
    const failures: { source: string; reason: string }[] = [];
    let seed: Buffer | undefined;
    for (const wrap of value.wraps) {
      const source = wrap.header.mechanism === ESCROW_MECHANISM ? ESCROW_SOURCE : wrap.header.backend;
      const result = await this.#unwrap(wrap, source);
      if (typeof result === 'string') {
        failures.push({ source, reason: result });
        continue;
      }
      if (result.length !== SEED_BYTES || !commitsTo(wrap.header, result)) {
        failures.push({ source, reason: 'unwrapped to bytes that are not the seed its header commits to' });
        result.fill(0);
        continue;
      }
      if (!recoveredBy.includes(source)) recoveredBy.push(source);
      if (seed === undefined) seed = result;
      else result.fill(0);
    }
    const outcome: SeedOutcome = { recoveredBy, failures, ...(seed !== undefined && { seed }) };
    if (this.#cache.size >= MAX_CACHED_SEEDS) {
      const [oldest] = this.#cache.keys();
      if (oldest !== undefined) {
        this.#cache.get(oldest)?.seed?.fill(0);
        this.#cache.delete(oldest);
      }
    }
    this.#cache.set(value.seedId, outcome);
    return { outcome, first: true };
  }

  /** The unwrapped bytes, or why not. */
  async #unwrap(wrap: ParsedEnvelope, source: string): Promise<Buffer | string> {
    const { header, wrapped, aad } = wrap;
    if (source === ESCROW_SOURCE) {
      const escrow = this.#sources.escrow;
      if (escrow === undefined) return 'no escrow shares given (--escrow-public-key, --share)';
      if (header.keyVersion !== escrow.fingerprint) return `escrow key ${header.keyVersion} not given`;
      try {
        return openFromEscrow(escrow.privateKey, wrapped, aad);
      } catch (error) {
        return reasonOf(error);
      }
    }
    const entry = this.#sources.backends.get(source);
    if (entry === undefined) return `backend '${source}' is not in the config`;
    if (entry.backend === undefined) return `unreachable: ${entry.unreachable ?? 'not opened'}`;
    const backend = entry.backend;
    this.#backendCalls++;
    try {
      return await within(UNWRAP_BUDGET_MS, deadline =>
        backend.unwrap({
          wrapped,
          keyVersion: header.keyVersion,
          mechanism: header.mechanism,
          aad,
          deadline,
        }),
      );
    } catch (error) {
      return reasonOf(error);
    }
  }

  /** Forgets every seed, zeroing them. */
  clear(): void {
    for (const { seed } of this.#cache.values()) seed?.fill(0);
    this.#cache.clear();
  }
}

/** A failure as the report says it: the catalog code and our own message, never a backend's text. */
function reasonOf(error: unknown): string {
  if (isBrokerError(error)) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : 'failed';
}
