// The key versions in the token. Each version is its own AES-256 secret key object
// (non-extractable, sensitive), labelled `<keyLabel>-v<N>` with a CKA_ID of the version
// number plus random bytes; its fingerprint is the token serial and that CKA_ID. Found key
// handles are cached until the connection recovers, when they may no longer be valid. A
// token that lost its storage finds no objects without failing, so a search result counts
// only when the token passes its check right after.
import { randomBytes } from 'node:crypto';
import graphene from 'graphene-pk11';
import type { KeyVersionInfo } from '../kek.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';

const { ObjectClass, KeyType, KeyGenMechanism } = graphene;

export interface KeyVersionsOptions {
  readonly keyLabel: string;
  readonly backendName: string;
  readonly logger: Logger;
  /** The serial of the token as last connected, for fingerprints. */
  readonly tokenSerial: () => string;
  /** Throws the token's PKCS#11 error when it cannot serve (hsm-connection.ts assertUsable). */
  readonly assertTokenUsable: () => void;
}

export class KeyVersions {
  readonly #options: KeyVersionsOptions;
  readonly #keys = new Map<string, graphene.SecretKey>();

  constructor(options: KeyVersionsOptions) {
    this.#options = options;
  }

  list(session: graphene.Session): KeyVersionInfo[] {
    const versions: KeyVersionInfo[] = [];
    for (const object of this.#findKeyObjects(session)) {
      const version = this.#versionOf(object.label);
      if (version !== undefined)
        versions.push({ version: String(version), fingerprint: this.#fingerprint(object) });
    }
    return versions.sort((a, b) => Number(a.version) - Number(b.version));
  }

  create(session: graphene.Session): KeyVersionInfo {
    const highest = this.#findKeyObjects(session).reduce(
      (max, object) => Math.max(max, this.#versionOf(object.label) ?? 0),
      0,
    );
    const version = highest + 1;
    const id = Buffer.alloc(16);
    id.writeUInt32BE(version, 0);
    randomBytes(12).copy(id, 4);
    const key = session.generateKey(KeyGenMechanism.AES, {
      class: ObjectClass.SECRET_KEY,
      keyType: KeyType.AES,
      valueLen: 32,
      label: this.#labelFor(version),
      id,
      token: true,
      private: true,
      sensitive: true,
      extractable: false,
      modifiable: false,
      encrypt: true,
      decrypt: true,
      wrap: false,
      unwrap: false,
    });
    this.#options.logger.info({ version }, 'created key version in token');
    return {
      version: String(version),
      fingerprint: this.#fingerprint(key),
      createdAt: new Date().toISOString(),
    };
  }

  /** The key object of `version`, from the cache or found by its label. */
  key(session: graphene.Session, version: string): graphene.SecretKey {
    const cached = this.#keys.get(version);
    if (cached !== undefined) return cached;
    const found = session.find({ class: ObjectClass.SECRET_KEY, label: this.#labelFor(Number(version)) });
    if (found.length === 0) {
      // During an outage this is UNAVAILABLE (the token's error), never a permanent answer.
      this.#options.assertTokenUsable();
      throw new BrokerError(
        'UNKNOWN_KEY_VERSION',
        `backend ${this.#options.backendName}: the token holds no key for version ${version}`,
      );
    }
    const key = found.items(0).toType<graphene.SecretKey>();
    this.#keys.set(version, key);
    return key;
  }

  /** Drops the cached handles: after a re-login or a device reset they may be invalid. */
  forget(): void {
    this.#keys.clear();
  }

  #findKeyObjects(session: graphene.Session): graphene.SecretKey[] {
    const found = session.find({ class: ObjectClass.SECRET_KEY, keyType: KeyType.AES });
    const keys: graphene.SecretKey[] = [];
    for (let index = 0; index < found.length; index++)
      keys.push(found.items(index).toType<graphene.SecretKey>());
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

  #fingerprint(key: graphene.SecretKey): string {
    return `pkcs11:${this.#options.tokenSerial()}:${key.id.toString('hex')}`;
  }
}
