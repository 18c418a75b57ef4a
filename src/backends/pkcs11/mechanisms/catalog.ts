// Which mechanism a pkcs11 backend writes with (its config) and which reads a wrap (the name
// the envelope records). Every mechanism the backend has ever been configured with stays
// readable, whatever the config says now.
import pkcs11js from 'pkcs11js';
import type { Pkcs11BackendConfig } from '../pkcs11-schema.ts';
import { aesGcm, aesGcmHsmIv } from './aes-gcm.ts';
import { aesKwp } from './aes-kwp.ts';
import type { Pkcs11Mechanism } from './mechanism.ts';
import { rsaOaep } from './rsa-oaep.ts';

/** CKM_AES_KEY_WRAP_PAD (PKCS#11 v2.40), RFC 5649's name on SoftHSM and most tokens. */
export const DEFAULT_KWP_MECHANISM = pkcs11js.CKM_AES_KEY_WRAP_PAD;
/** CKM_AES_KEY_WRAP_KWP (PKCS#11 v3.0), which pkcs11js (v2.40) does not name. */
export const CKM_AES_KEY_WRAP_KWP = 0x210b;

type MechanismSettings = Pick<Pkcs11BackendConfig, 'mechanism' | 'oaepHash' | 'kwpMechanism'>;

/** Every mechanism by its recorded name, AES-KWP under the configured constant. */
function readable(config: MechanismSettings): Map<string, Pkcs11Mechanism> {
  const all = [
    aesGcm,
    aesGcmHsmIv(),
    aesKwp(config.kwpMechanism ?? DEFAULT_KWP_MECHANISM),
    rsaOaep('sha256'),
    rsaOaep('sha1'),
  ];
  return new Map(all.map(mechanism => [mechanism.name, mechanism]));
}

export interface MechanismChoice {
  /** New wraps. */
  readonly write: Pkcs11Mechanism;
  /** The mechanism a recorded name stands for, or undefined if no pkcs11 mechanism has it. */
  read(name: string): Pkcs11Mechanism | undefined;
}

export function chooseMechanisms(config: MechanismSettings): MechanismChoice {
  const byName = readable(config);
  // SHA-1 OAEP wraps record their own name: they open only with SHA-1.
  const recorded =
    config.mechanism === 'rsa-oaep' && config.oaepHash === 'sha1' ? 'rsa-oaep-sha1' : config.mechanism;
  const write = byName.get(recorded);
  if (write === undefined) throw new Error(`unknown pkcs11 mechanism ${config.mechanism}`);
  return { write, read: name => byName.get(name) };
}
