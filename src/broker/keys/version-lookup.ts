// A Decrypt that names a key version the registry does not know (another broker or an
// operator created it) looks it up in that one backend, under the call's own deadline and
// never behind admin work or disk I/O. One listing per backend is in flight at a time and
// shared by every caller; a listing that did not find the version answers the next callers
// at once for a while, so garbage versions cannot turn into a listing storm.
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import { within, withSignal, type Deadline } from '../../deadline.ts';
import { toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';

export interface VersionLookupDeps {
  readonly backends: ReadonlyMap<string, KekBackend>;
  /** Told of every listing that found a new version, to adopt it in the background. */
  readonly onListed: (backend: string, listed: readonly KeyVersionInfo[]) => void;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** How long a listing's answer stands before a Decrypt may list the same backend again. */
const LOOKUP_MIN_INTERVAL_MS = 5000;
/** A listing's own budget: it outlives a short call so that the caller's retry finds the version. */
const LOOKUP_BUDGET_MS = 10000;

interface Listing {
  readonly startedAt: number;
  readonly versions: Promise<readonly KeyVersionInfo[]>;
}

export class VersionLookup {
  readonly #deps: VersionLookupDeps;
  readonly #now: () => number;
  readonly #listings = new Map<string, Listing>();

  constructor(deps: VersionLookupDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** The version as the backend lists it, or undefined when it holds no such version. */
  async find(backendName: string, version: string, deadline: Deadline): Promise<KeyVersionInfo | undefined> {
    const backend = this.#deps.backends.get(backendName);
    if (backend === undefined) return undefined;
    let listing = this.#listings.get(backendName);
    if (listing === undefined || this.#now() - listing.startedAt >= LOOKUP_MIN_INTERVAL_MS) {
      listing = this.#list(backend);
      this.#listings.set(backendName, listing);
    }
    const versions = await withSignal(listing.versions, deadline.signal);
    return versions.find(info => info.version === version);
  }

  #list(backend: KekBackend): Listing {
    const versions = within(LOOKUP_BUDGET_MS, deadline => backend.listVersions(deadline)).then(
      listed => {
        this.#deps.onListed(backend.name, listed);
        return listed;
      },
      (error: unknown) => {
        // A failed listing is not an answer: the next Decrypt may try again at once.
        this.#listings.delete(backend.name);
        this.#deps.logger.warn(
          { backend: backend.name, code: toBrokerError(error).code },
          'could not list key versions for a Decrypt',
        );
        throw error;
      },
    );
    // Callers that gave up on their deadline leave the listing unobserved.
    versions.catch(() => undefined);
    return { startedAt: this.#now(), versions };
  }
}
