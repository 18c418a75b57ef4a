// The key versions in the token. Each version is its own key, made for the backend's
// mechanism when the broker creates it (an AES key, or an RSA pair), labelled
// `<keyLabel>-v<N>` with a CKA_ID of the version number plus random bytes; its fingerprint
// is the token serial and that CKA_ID. Found keys are cached until the connection recovers,
// when their handles may no longer be valid. A token that lost its storage finds no objects
// without failing, so a search result counts only when the token passes its check after.
import { randomBytes } from 'node:crypto';
import type graphene from 'graphene-pk11';
import type { KeyVersionInfo } from '../kek.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { assertSafe, describeKey, findUnwrapKeys, generateFor, versionKey } from './key-objects.ts';
import { keyFits, type Pkcs11Mechanism, type VersionKey } from './mechanisms/mechanism.ts';

export interface KeyVersionsOptions {
  readonly keyLabel: string;
  readonly backendName: string;
  /** The mechanism of new wraps: the kind of key `create` makes, and what listings check. */
  readonly writeMechanism: Pkcs11Mechanism;
  /** The modulus of RSA keys the broker creates. */
  readonly rsaBits: number;
  readonly logger: Logger;
  /** The serial of the token as last connected, for fingerprints. */
  readonly tokenSerial: () => string;
  /** Throws the token's PKCS#11 error when it cannot serve (hsm-connection.ts assertUsable). */
  readonly assertTokenUsable: () => void;
}

export class KeyVersions {
  readonly #options: KeyVersionsOptions;
  readonly #keys = new Map<string, VersionKey>();

  constructor(options: KeyVersionsOptions) {
    this.#options = options;
  }

  /** Every version in the token, each refused if unsafe and marked if it cannot write. */
  list(session: graphene.Session): KeyVersionInfo[] {
    const versions: { number: number; info: KeyVersionInfo }[] = [];
    for (const object of this.#findKeyObjects(session)) {
      const version = this.#versionOf(object.label);
      if (version === undefined) continue;
      assertSafe(object, object.label, this.#options.backendName);
      const refusal = this.#writeRefusal(versionKey(session, object));
      versions.push({
        number: version,
        info: {
          version: String(version),
          fingerprint: this.#fingerprint(object),
          ...(refusal && { writeRefusal: refusal }),
        },
      });
    }
    return versions.sort((a, b) => a.number - b.number).map(entry => entry.info);
  }

  async create(session: graphene.Session): Promise<KeyVersionInfo> {
    const highest = this.#findKeyObjects(session).reduce(
      (max, object) => Math.max(max, this.#versionOf(object.label) ?? 0),
      0,
    );
    const version = highest + 1;
    const id = Buffer.alloc(16);
    id.writeUInt32BE(version, 0);
    randomBytes(12).copy(id, 4);
    const { writeMechanism, rsaBits, logger } = this.#options;
    const key = await generateFor(session, writeMechanism, { label: this.#labelFor(version), id, rsaBits });
    logger.info({ version, mechanism: writeMechanism.name }, 'created key version in token');
    return {
      version: String(version),
      fingerprint: this.#fingerprint(key),
      createdAt: new Date().toISOString(),
    };
  }

  /** The key of `version`, from the cache or found by its label. */
  key(session: graphene.Session, version: string): VersionKey {
    const cached = this.#keys.get(version);
    if (cached !== undefined) return cached;
    const label = this.#labelFor(Number(version));
    const found = findUnwrapKeys(session, label);
    if (found.length === 0) {
      // During an outage this is UNAVAILABLE (the token's error), never a permanent answer.
      this.#options.assertTokenUsable();
      throw new BrokerError(
        'UNKNOWN_KEY_VERSION',
        `backend ${this.#options.backendName}: the token holds no key for version ${version}`,
      );
    }
    const object = found[0] as graphene.Key;
    assertSafe(object, label, this.#options.backendName);
    const key = versionKey(session, object);
    this.#keys.set(version, key);
    return key;
  }

  /** The key of `version` for `mechanism`, refused when it cannot do that. */
  keyFor(
    session: graphene.Session,
    version: string,
    mechanism: Pkcs11Mechanism,
    direction: 'seal' | 'open',
  ): VersionKey {
    const key = this.key(session, version);
    if (keyFits(key, mechanism, direction)) return key;
    const { backendName } = this.#options;
    if (direction === 'open') {
      throw new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${backendName}: key version ${version} is ${describeKey(key)}, which cannot open a ${mechanism.name} wrap`,
      );
    }
    throw new BrokerError(
      'KEY_MECHANISM_MISMATCH',
      `backend ${backendName}: key version ${version} is ${describeKey(key)}, which cannot write with mechanism ${mechanism.name}; rotate the backend to create a key for it`,
    );
  }

  /** Drops the cached handles: after a re-login or a device reset they may be invalid. */
  forget(): void {
    this.#keys.clear();
  }

  #writeRefusal(key: VersionKey): string | undefined {
    const { writeMechanism } = this.#options;
    if (keyFits(key, writeMechanism, 'seal')) return undefined;
    return `is ${describeKey(key)}, which cannot write with mechanism ${writeMechanism.name}`;
  }

  #findKeyObjects(session: graphene.Session): graphene.Key[] {
    const keys = findUnwrapKeys(session);
    this.#options.assertTokenUsable();
    return keys;
  }

  #labelFor(version: number): string {
    return `${this.#options.keyLabel}-v${version}`;
  }

  #versionOf(label: string): number | undefined {
    const prefix = `${this.#options.keyLabel}-v`;
    if (!label.startsWith(prefix)) return undefined;
    const digits = label.slice(prefix.length);
    return /^[1-9]\d{0,8}$/.test(digits) ? Number(digits) : undefined;
  }

  #fingerprint(key: graphene.Key): string {
    return `pkcs11:${this.#options.tokenSerial()}:${key.id.toString('hex')}`;
  }
}
