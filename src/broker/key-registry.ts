// Which key versions exist per backend, which one writes, which are retired, and the
// key_id they add up to. The registry is the in-memory truth behind Status and Encrypt;
// its persistent form is BrokerState (state-store.ts).
import type { KeyVersionInfo } from '../backends/kek.ts';
import { BrokerError } from '../errors.ts';
import { deriveKeyId, type WriteKey } from './key-id.ts';
import type { BrokerState, FailoverSetting, StoredVersion } from './state-store.ts';

type StoredBackend = BrokerState['backends'][string];

/** What Encrypt needs, taken in one read so key_id always matches the versions that wrap. */
export interface WriteSnapshot {
  readonly keyId: string;
  readonly wrap: FailoverSetting['wrap'];
  /** The keys that wrap each new seed: one for `wrap: first`, every backend in order for `all`. */
  readonly writeKeys: readonly WriteKey[];
}

export class KeyRegistry {
  #state: BrokerState;
  #failover: FailoverSetting;
  /** With wrap: first, the backend that writes now (the first healthy one); not persisted. */
  #activeWriter: string | undefined;
  #snapshot: WriteSnapshot;

  /** `failover` is the effective setting (config, or a run-time change that still applies). */
  constructor(state: BrokerState, failover: FailoverSetting) {
    this.#state = structuredClone(state);
    this.#failover = structuredClone(failover);
    this.#snapshot = this.#derive();
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
  setActiveWriter(backend: string | undefined): void {
    this.#activeWriter = backend;
    this.#snapshot = this.#derive();
  }

  get activeWriter(): string | undefined {
    return this.#activeWriter;
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
    const record: StoredVersion = known ?? {
      version: info.version,
      fingerprint: info.fingerprint,
      createdAt: info.createdAt ?? now.toISOString(),
      state: 'active',
    };
    const versions = entry?.versions ?? [];
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
   * Replaces the whole state (after another process rewrote the state file, or to undo a
   * change that could not be persisted), and the failover setting when given.
   */
  replace(state: BrokerState, failover?: FailoverSetting): void {
    this.#state = structuredClone(state);
    if (failover !== undefined) this.#failover = structuredClone(failover);
    this.#snapshot = this.#derive();
  }

  #derive(): WriteSnapshot {
    const { order, wrap } = this.#failover;
    const active =
      this.#activeWriter !== undefined && order.includes(this.#activeWriter) ? this.#activeWriter : order[0];
    const writers = wrap === 'all' ? order : active === undefined ? [] : [active];
    const writeKeys = writers.map(backend => {
      const version = this.writeVersion(backend);
      if (version === undefined)
        throw new BrokerError('INTERNAL', `no write version is known for backend ${backend}`);
      return { backend, version: version.version, fingerprint: version.fingerprint };
    });
    if (writeKeys.length === 0) throw new BrokerError('INTERNAL', 'the failover order names no backend');
    return { keyId: deriveKeyId(writeKeys, this.#state.generation), wrap, writeKeys };
  }
}

/**
 * Merges what the state file says about one backend with what the backend holds.
 * Versions the backend has but the state lacks are adopted as active (created by another
 * broker or an operator). A write version the backend lacks, or a key whose identity
 * changed, is refused rather than guessed at. An older version the backend lacks is kept
 * (its data reads again once the key is restored) and reported in `missing`.
 * Returns undefined when neither side knows any version.
 */
export function reconcileBackend(
  name: string,
  stored: StoredBackend | undefined,
  listed: readonly KeyVersionInfo[],
  now: Date,
): { backend: StoredBackend; changed: boolean; missing: string[] } | undefined {
  const byVersion = new Map(listed.map(info => [info.version, info]));
  if (stored === undefined) {
    if (listed.length === 0) return undefined;
    const versions = listed.map(info => toStored(info, now));
    const latest = versions[versions.length - 1] as StoredVersion;
    return { backend: { writeVersion: latest.version, versions }, changed: true, missing: [] };
  }
  for (const version of stored.versions) {
    const found = byVersion.get(version.version);
    if (found === undefined && version.version === stored.writeVersion) {
      throw new BrokerError(
        'STATE_MISMATCH',
        `backend ${name}: the state says version ${version.version} writes, but the backend holds no such key; check that the backend points at the right token or key`,
      );
    }
    if (found !== undefined && found.fingerprint !== version.fingerprint) {
      throw new BrokerError(
        'STATE_MISMATCH',
        `backend ${name}: key version ${version.version} has a different identity than the state records; it was recreated or the backend points elsewhere`,
      );
    }
  }
  const missing = stored.versions
    .filter(version => !byVersion.has(version.version))
    .map(version => version.version);
  const known = new Set(stored.versions.map(version => version.version));
  const adopted = listed.filter(info => !known.has(info.version)).map(info => toStored(info, now));
  if (adopted.length === 0) return { backend: stored, changed: false, missing };
  return {
    backend: { writeVersion: stored.writeVersion, versions: [...stored.versions, ...adopted] },
    changed: true,
    missing,
  };
}

function toStored(info: KeyVersionInfo, now: Date): StoredVersion {
  return {
    version: info.version,
    fingerprint: info.fingerprint,
    createdAt: info.createdAt ?? now.toISOString(),
    state: 'active',
  };
}
