// Which key versions exist per backend, which one writes, which are retired, and the
// key_id they add up to. The registry is the in-memory truth behind Status and Encrypt;
// its persistent form is BrokerState (state/state-schema.ts).
import type { KeyVersionInfo } from '../../backends/kek.ts';
import { BrokerError } from '../../errors.ts';
import type { BrokerState, FailoverSetting, StoredVersion, ThinSeed } from '../state/state-schema.ts';
import type { UsageScan } from '../usage-scan.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import type { Logger } from '../../log.ts';
import { writeOnlyBackends } from '../../backends/kinds.ts';
import { reconcileBackend, resolveFailover, toStored } from '../state/reconcile.ts';
import { deriveKeyId, type WriteKey } from './key-id.ts';

/** What Encrypt needs, taken in one read so key_id always matches the versions that wrap. */
export interface WriteSnapshot {
  readonly keyId: string;
  readonly wrap: FailoverSetting['wrap'];
  /**
   * The keys that wrap each new seed and can unwrap it: one for `wrap: first`, every such
   * backend in order for `all`. The first to succeed writes the ciphertext.
   */
  readonly writeKeys: readonly WriteKey[];
  /** Write-only keys of the order (escrow): each wraps every seed too, beside the others. */
  readonly escrowKeys: readonly WriteKey[];
}

export class KeyRegistry {
  #state: BrokerState;
  #failover: FailoverSetting;
  #snapshot: WriteSnapshot;
  readonly #writeOnly: ReadonlySet<string>;

  /**
   * `failover` is the effective setting (config, or a run-time change that still applies);
   * `writeOnly` names the backends of the config that only wrap (escrow keys).
   * A state written before versions recorded when they stopped writing gets `now` for each
   * that does not write: the cautious guess, as only a later scan then proves what needs it.
   */
  constructor(
    state: BrokerState,
    failover: FailoverSetting,
    writeOnly: ReadonlySet<string> = new Set(),
    now = new Date(),
  ) {
    this.#writeOnly = writeOnly;
    this.#state = structuredClone(state);
    for (const entry of Object.values(this.#state.backends)) markWriteEnded(entry, now);
    this.#failover = structuredClone(failover);
    this.#snapshot = this.#derive();
  }

  /**
   * The registry of a state someone else wrote (a peer's proposal, a state about to be
   * stored), under the failover setting this broker's config puts in force for it.
   */
  static under(state: BrokerState, config: BrokerConfig, logger: Logger): KeyRegistry {
    return new KeyRegistry(
      state,
      resolveFailover(structuredClone(state), config, logger).setting,
      writeOnlyBackends(config.backends),
    );
  }

  /** Whether a backend only wraps (an escrow key): it never writes the ciphertext, never unwraps. */
  isWriteOnly(backend: string): boolean {
    return this.#writeOnly.has(backend);
  }

  get current(): WriteSnapshot {
    return this.#snapshot;
  }

  get failover(): FailoverSetting {
    return structuredClone(this.#failover);
  }

  /** A copy for persisting; the registry's own state is never handed out. */
  toState(): BrokerState {
    return structuredClone(this.#state);
  }

  version(backend: string, version: string): StoredVersion | undefined {
    return this.#state.backends[backend]?.versions.find(entry => entry.version === version);
  }

  /** Records a run-time failover change, and the config setting it replaces. */
  setFailover(failover: FailoverSetting, basedOn: FailoverSetting): void {
    const previous = this.#failover;
    this.#failover = structuredClone(failover);
    try {
      this.#snapshot = this.#derive();
    } catch (error) {
      this.#failover = previous;
      throw error;
    }
    this.#state.failover = { current: structuredClone(failover), basedOn: structuredClone(basedOn) };
  }

  /** With wrap: first, moves writes to another backend of the order (key_id changes). */
  setActiveWriter(backend: string): void {
    this.#state.writer = backend;
    this.#snapshot = this.#derive();
  }

  /** The thin seeds the state records. */
  thinSeeds(): ThinSeed[] {
    return structuredClone(this.#state.thinSeeds ?? []);
  }

  setThinSeeds(seeds: readonly ThinSeed[]): void {
    this.#state.thinSeeds = structuredClone([...seeds]);
  }

  lastScan(): UsageScan | undefined {
    return structuredClone(this.#state.lastScan);
  }

  setLastScan(scan: UsageScan): void {
    this.#state.lastScan = structuredClone(scan);
  }

  /** A new generation is a new key_id over the same keys: the apiserver re-seeds. */
  bumpGeneration(): void {
    this.#state.generation++;
    this.#snapshot = this.#derive();
  }

  setVersionState(backend: string, version: string, state: StoredVersion['state']): void {
    const record = this.#state.backends[backend]?.versions.find(entry => entry.version === version);
    if (record === undefined)
      throw new BrokerError('NOT_FOUND', `backend ${backend} has no key version ${version}`);
    record.state = state;
  }

  /** Adds Decrypt usage counted since the last flush to the persistent record. */
  addUsage(backend: string, version: string, count: number, lastAt: string): void {
    const record = this.#state.backends[backend]?.versions.find(entry => entry.version === version);
    if (record === undefined) return;
    record.decryptCount = (record.decryptCount ?? 0) + count;
    if (record.lastDecryptAt === undefined || record.lastDecryptAt < lastAt) record.lastDecryptAt = lastAt;
  }

  /**
   * Makes a version the write version of its backend: a freshly created one is added, one
   * the registry already lists (adopted earlier as active) is promoted. A listed version
   * with another identity is refused: that key was recreated, not rotated.
   */
  setWriteVersion(backend: string, info: KeyVersionInfo, now: Date): void {
    const entry = this.#state.backends[backend];
    const known = entry?.versions.find(version => version.version === info.version);
    if (known !== undefined && known.fingerprint !== info.fingerprint) {
      throw new BrokerError(
        'STATE_MISMATCH',
        `backend ${backend}: key version ${info.version} has a different identity than the state records`,
      );
    }
    const record = known ?? toStored(info, now);
    const versions = entry?.versions ?? [];
    const previous = versions.find(version => version.version === entry?.writeVersion);
    if (previous !== undefined && previous !== record) previous.writeEndedAt = now.toISOString();
    delete record.writeEndedAt;
    this.#state.backends[backend] = {
      writeVersion: info.version,
      versions: known === undefined ? [...versions, record] : versions,
    };
    this.#snapshot = this.#derive();
  }

  /** The write version of a backend, if it has one. */
  writeVersion(backend: string): StoredVersion | undefined {
    const entry = this.#state.backends[backend];
    return entry?.versions.find(version => version.version === entry.writeVersion);
  }

  /**
   * Replaces the whole state (another process changed the store, or a listing added versions),
   * with the failover setting in force under it.
   */
  replace(state: BrokerState, failover: FailoverSetting): void {
    this.#state = structuredClone(state);
    this.#failover = structuredClone(failover);
    this.#snapshot = this.#derive();
  }

  /**
   * Merges a fresh listing of one backend: versions created elsewhere are adopted as active
   * (another writer may have used them: they count as written until now).
   * Returns whether anything changed.
   */
  adoptListed(backend: string, listed: readonly KeyVersionInfo[], now: Date): boolean {
    const merged = reconcileBackend(backend, this.#state.backends[backend], listed, now, {
      replaceable: this.#writeOnly.has(backend),
    });
    if (merged === undefined || !merged.changed) return false;
    this.#state.backends[backend] = structuredClone(merged.backend);
    markWriteEnded(this.#state.backends[backend], now);
    this.#snapshot = this.#derive();
    return true;
  }

  /** A way back to the registry as it is now, to undo a change that could not be persisted. */
  checkpoint(): () => void {
    const state = structuredClone(this.#state);
    const failover = this.#failover;
    return () => {
      this.#state = state;
      this.#failover = failover;
      this.#snapshot = this.#derive();
    };
  }

  /**
   * The write key set. A backend whose keys are not known yet (never reached: it was down
   * at the first start) is left out until it joins; that is a different key set, not a
   * momentary health state, so key_id changes when it joins. Escrow keys wrap whatever the
   * mode and are part of key_id (a new escrow key re-seeds every apiserver), but only a key
   * that can unwrap may write.
   */
  #derive(): WriteSnapshot {
    const { order, wrap } = this.#failover;
    const known = order.flatMap(backend => {
      const version = this.writeVersion(backend);
      return version === undefined
        ? []
        : [{ backend, version: version.version, fingerprint: version.fingerprint }];
    });
    const unwrapping = known.filter(key => !this.#writeOnly.has(key.backend));
    const escrowKeys = known.filter(key => this.#writeOnly.has(key.backend));
    const active = unwrapping.find(key => key.backend === this.#state.writer) ?? unwrapping[0];
    const writeKeys = wrap === 'all' ? unwrapping : active === undefined ? [] : [active];
    if (writeKeys.length === 0)
      throw new BrokerError(
        'KEY_MISSING',
        'no backend of the failover order that can unwrap has a known key version yet',
      );
    return {
      keyId: deriveKeyId([...writeKeys, ...escrowKeys], this.#state.generation),
      wrap,
      writeKeys,
      escrowKeys,
    };
  }
}

/** Gives every version that does not write, and does not say since when, `now`. */
function markWriteEnded(entry: BrokerState['backends'][string], now: Date): void {
  for (const version of entry.versions)
    if (version.version !== entry.writeVersion) version.writeEndedAt ??= now.toISOString();
}
