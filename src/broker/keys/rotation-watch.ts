// Adopts rotations done in a key service itself (a `transit/keys/<key>/rotate` in Vault, a
// new primary version in a cloud console). Each backend that offers `externalRotation` is
// polled; a new current version becomes the write version only after it has been seen
// unchanged for `stableForMs`, so a flapping service cannot churn the apiserver's DEKs.
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import { toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { within } from '../../deadline.ts';

export interface RotationWatchDeps {
  readonly backends: readonly KekBackend[];
  /** The version the registry writes with now, and its creation time. */
  readonly writeVersion: (backend: string) => { version: string; createdAt: string } | undefined;
  /** Makes the version the write version and persists it. */
  readonly adopt: (backend: string, info: KeyVersionInfo) => Promise<void>;
  readonly logger: Logger;
  readonly now?: () => number;
}

interface Candidate {
  readonly version: string;
  readonly firstSeen: number;
}

const POLL_TIMEOUT_MS = 10000;

export class RotationWatch {
  readonly #deps: RotationWatchDeps;
  readonly #now: () => number;
  readonly #candidates = new Map<string, Candidate>();
  readonly #timers: NodeJS.Timeout[] = [];

  constructor(deps: RotationWatchDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  start(): void {
    for (const backend of this.#deps.backends) {
      const rotation = backend.externalRotation;
      if (rotation === undefined) continue;
      this.#timers.push(setInterval(() => void this.check(backend.name), rotation.intervalMs).unref());
    }
  }

  stop(): void {
    for (const timer of this.#timers.splice(0)) clearInterval(timer);
  }

  /** One poll of one backend; returns the version adopted, if any. */
  async check(name: string): Promise<string | undefined> {
    const backend = this.#deps.backends.find(candidate => candidate.name === name);
    const rotation = backend?.externalRotation;
    if (rotation === undefined) return undefined;
    let latest: KeyVersionInfo;
    try {
      latest = await within(POLL_TIMEOUT_MS, deadline => rotation.latest(deadline));
    } catch (error) {
      // The health probe reports outages; a missed poll only delays adoption.
      this.#deps.logger.debug({ backend: name, code: toBrokerError(error).code }, 'rotation poll failed');
      return undefined;
    }
    const current = this.#deps.writeVersion(name);
    if (current === undefined || latest.version === current.version || !isNewer(latest, current)) {
      this.#candidates.delete(name);
      return undefined;
    }
    const now = this.#now();
    const candidate = this.#candidates.get(name);
    if (candidate?.version !== latest.version) {
      this.#candidates.set(name, { version: latest.version, firstSeen: now });
      this.#deps.logger.info(
        { backend: name, version: latest.version, stableForMs: rotation.stableForMs },
        'new key version seen in the backend',
      );
      if (rotation.stableForMs > 0) return undefined;
    } else if (now - candidate.firstSeen < rotation.stableForMs) {
      return undefined;
    }
    this.#candidates.delete(name);
    await this.#deps.adopt(name, latest);
    return latest.version;
  }
}

/** Services number versions upwards; fall back to creation time where they do not. */
function isNewer(latest: KeyVersionInfo, current: { version: string; createdAt: string }): boolean {
  const [a, b] = [Number(latest.version), Number(current.version)];
  if (Number.isInteger(a) && Number.isInteger(b)) return a > b;
  return latest.createdAt !== undefined && latest.createdAt > current.createdAt;
}
