// The pkcs11 backend block `hsm-probe` recommends for a token, from what round-tripped: the
// first that worked of aes-gcm (host IV), aes-gcm-hsm-iv (token IV), aes-kwp, rsa-oaep (SHA-256
// before SHA-1). Only the keys that differ from the defaults, or that a backend must have.
import { DEFAULT_KWP_MECHANISM } from '../mechanisms/catalog.ts';
import type { OaepHash } from '../mechanisms/rsa-oaep.ts';
import type { TrialResult } from './mechanism-trials.ts';
import type { SessionReport } from './token-report.ts';

/** How the probe was pointed at the token: the same choices a backend's config makes. */
export interface ProbeTarget {
  readonly name: string;
  readonly module: string;
  readonly token:
    { readonly tokenLabel: string } | { readonly tokenSerial: string } | { readonly slotId: number };
  readonly pin: { readonly pinFile: string } | { readonly pinEnv: string };
  readonly keyLabel: string;
}

/** A pkcs11 backend entry of the config, in the order the docs list its keys. */
export interface RecommendedBackend {
  readonly name: string;
  readonly type: 'pkcs11';
  readonly module: string;
  readonly tokenLabel?: string;
  readonly tokenSerial?: string;
  readonly slotId?: number;
  readonly pinFile?: string;
  readonly pinEnv?: string;
  readonly keyLabel: string;
  readonly generateIfMissing?: true;
  readonly mechanism: TrialResult['mechanism'];
  readonly oaepHash?: OaepHash;
  readonly kwpMechanism?: number;
  readonly sessions: number;
}

export interface Recommendation {
  readonly backend: RecommendedBackend;
  /** Why this mechanism, in a line. */
  readonly because: string;
}

/** What any backend block for the probe's target says: where the token is and how to log in. */
export function targetBlock(target: ProbeTarget) {
  return {
    name: target.name,
    type: 'pkcs11' as const,
    module: target.module,
    ...target.token,
    ...target.pin,
    keyLabel: target.keyLabel,
  };
}

const PREFERENCE: readonly { readonly mechanism: TrialResult['mechanism']; readonly because: string }[] = [
  { mechanism: 'aes-gcm', because: 'AES-256-GCM with a host IV round-trips (the default)' },
  {
    mechanism: 'aes-gcm-hsm-iv',
    because: 'the token refuses a host GCM IV but generates its own',
  },
  { mechanism: 'aes-kwp', because: 'no AES-GCM works; AES key wrap with padding (RFC 5649) does' },
  { mechanism: 'rsa-oaep', because: 'no AES mechanism works; RSA-OAEP does' },
];

/**
 * The block for the best mechanism that round-tripped, or undefined when none did.
 * `keyFound`: the token already holds a key labelled keyLabel; without one the block asks the
 * broker to create it (generateIfMissing), or it would not start.
 */
export function recommend(
  trials: readonly TrialResult[],
  sessions: SessionReport,
  target: ProbeTarget,
  keyFound: boolean,
): Recommendation | undefined {
  for (const { mechanism, because } of PREFERENCE) {
    const worked = trials.find(trial => trial.mechanism === mechanism && trial.outcome === 'ok');
    if (worked === undefined) continue;
    const kwp = worked.kwpMechanism;
    const backend: RecommendedBackend = {
      ...targetBlock(target),
      ...(keyFound ? {} : { generateIfMissing: true as const }),
      mechanism,
      ...(worked.oaepHash === undefined ? {} : { oaepHash: worked.oaepHash }),
      ...(kwp === undefined || kwp === DEFAULT_KWP_MECHANISM ? {} : { kwpMechanism: kwp }),
      sessions: sessions.defaultPoolSize,
    };
    return { backend, because };
  }
  return undefined;
}
