// This broker's side of a shared key state: what it advertises to its peers, and its proof
// that it can unwrap with the write keys a peer proposes before the new key_id is committed.
// The proof is a real round trip (wrap a random probe with the proposed version, unwrap it)
// with every write key whose backend this node reaches, after checking that the version it
// holds has the identity the proposal names: two HSM partitions that hold different keys
// under one label must never agree.
import { randomBytes } from 'node:crypto';
import type { KekBackend } from '../../backends/kek.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import { within } from '../../deadline.ts';
import { BrokerError, toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { ADMIN_CALL_MS } from '../state/reconcile.ts';
import type { BrokerState } from '../state/state-schema.ts';
import type { LocalBroker } from '../state/state-store.ts';
import { KeyRegistry } from './key-registry.ts';
import type { KeySet } from './key-set.ts';

export interface PeerConfirmationDeps {
  readonly config: BrokerConfig;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly keys: KeySet;
  readonly logger: Logger;
}

/** Bound to the probe's wraps, so a probe wrap can never pass for an envelope's. */
const PROBE_AAD = Buffer.from('kms-broker/peer-confirmation/v1', 'utf8');

export function localBroker(deps: PeerConfirmationDeps): LocalBroker {
  return {
    advertised() {
      const stored = deps.keys.stored();
      return {
        keyId: deps.keys.current.keyId,
        unwrappable: Object.entries(stored).flatMap(([backend, entry]) =>
          entry.versions
            .filter(version => version.state === 'active' && !deps.keys.isWriteOnly(backend))
            .map(({ version }) => ({ backend, version })),
        ),
      };
    },

    async confirm(state: BrokerState) {
      const { writeKeys, escrowKeys } = KeyRegistry.under(state, deps.config, deps.logger).current;
      const refusals: string[] = [];
      const failures: string[] = [];
      let proven = 0;
      // An escrow key is checked by identity only: no node can unwrap with it.
      for (const key of [...writeKeys, ...escrowKeys]) {
        const backend = deps.backends.get(key.backend);
        if (backend === undefined) {
          refusals.push(`no backend is named '${key.backend}' here`);
          continue;
        }
        try {
          await within(ADMIN_CALL_MS, async deadline => {
            const held = (await backend.listVersions(deadline)).find(info => info.version === key.version);
            if (held === undefined)
              throw new Mismatch(`${key.backend} holds no key version ${key.version} here`);
            if (held.fingerprint !== key.fingerprint)
              throw new Mismatch(`${key.backend} key version ${key.version} has another identity here`);
            if (backend.writeOnly === true) return;
            const probe = randomBytes(32);
            const request = { keyVersion: key.version, aad: PROBE_AAD, deadline };
            const wrapped = await backend.wrap({ ...request, plaintext: probe });
            const back = await backend.unwrap({ ...request, wrapped, mechanism: backend.mechanism });
            if (!back.equals(probe))
              throw new Mismatch(`${key.backend} key version ${key.version} did not unwrap its own wrap`);
          });
          if (backend.writeOnly !== true) proven++;
        } catch (error) {
          if (error instanceof Mismatch) refusals.push(error.message);
          else failures.push(`${key.backend} key version ${key.version}: ${toBrokerError(error).code}`);
        }
      }
      // A key that is positively wrong refuses; an unreachable one does not, while another
      // write key proves that this node can read what the new key set writes.
      if (refusals.length > 0 || proven === 0)
        throw new BrokerError('PROMOTION_REFUSED', [...refusals, ...failures].join('; '));
    },
  };
}

class Mismatch extends Error {}
