// The key objects of one version in the token: an AES secret key, or an RSA key pair whose
// private half unwraps. What their attributes allow decides which mechanisms they serve,
// and a key an HSM administrator imported is used only when it cannot leave the token.
import graphene from 'graphene-pk11';
import { BrokerError } from '../../errors.ts';
import { settle, type KeyUsage, type Pkcs11Mechanism, type VersionKey } from './mechanisms/mechanism.ts';

const { ObjectClass, KeyType, KeyGenMechanism } = graphene;

const NO_USAGE: KeyUsage = { encrypt: false, decrypt: false, wrap: false, unwrap: false };

/** The usage attributes of an object; each key class has only its own (CKR_ATTRIBUTE_TYPE_INVALID). */
function usageOf(object: graphene.Key, names: readonly (keyof KeyUsage)[]): KeyUsage {
  const read = object.getAttribute(Object.fromEntries(names.map(name => [name, null])));
  const usage: Record<keyof KeyUsage, boolean> = { ...NO_USAGE };
  for (const name of names) usage[name] = read[name] === true;
  return usage;
}

/**
 * Refuses a key that the token would let out: it must be sensitive and never extractable.
 * Keys the broker creates are; one imported by hand may not be.
 */
export function assertSafe(object: graphene.Key, label: string, backendName: string): void {
  const { sensitive, extractable } = object.getAttribute({ sensitive: null, extractable: null });
  const unsafe = [
    ...(sensitive === true ? [] : ['CKA_SENSITIVE is false']),
    ...(extractable === false ? [] : ['CKA_EXTRACTABLE is true']),
  ];
  if (unsafe.length === 0) return;
  throw new BrokerError(
    'HSM_KEY_UNSAFE',
    `backend ${backendName}: key '${label}' (CKA_ID ${object.id.toString('hex')}) could leave the token: ${unsafe.join(' and ')}; set CKA_SENSITIVE=true and CKA_EXTRACTABLE=false on it (tokens allow both changes, never their reverse) or create the key inside the HSM with them`,
  );
}

/** The unwrapping objects labelled `label`: AES secret keys and RSA private keys. */
export function findUnwrapKeys(session: graphene.Session, label?: string): graphene.Key[] {
  const labelled = label === undefined ? {} : { label };
  const found: graphene.Key[] = [];
  for (const template of [
    { class: ObjectClass.SECRET_KEY, keyType: KeyType.AES, ...labelled },
    { class: ObjectClass.PRIVATE_KEY, keyType: KeyType.RSA, ...labelled },
  ]) {
    const objects = session.find(template);
    for (let index = 0; index < objects.length; index++)
      found.push(objects.items(index).toType<graphene.Key>());
  }
  return found;
}

/** The version key around an unwrapping object: its usage and, for RSA, its public half. */
export function versionKey(session: graphene.Session, key: graphene.Key): VersionKey {
  if (key.class === ObjectClass.SECRET_KEY) {
    const usage = usageOf(key, ['encrypt', 'decrypt', 'wrap', 'unwrap']);
    return { kind: 'aes', key, sealKey: key, sealUsage: usage, openUsage: usage };
  }
  const publics = session.find({ class: ObjectClass.PUBLIC_KEY, keyType: KeyType.RSA, id: key.id });
  const publicKey = publics.length > 0 ? publics.items(0).toType<graphene.Key>() : undefined;
  return {
    kind: 'rsa',
    key,
    sealKey: publicKey,
    sealUsage: publicKey === undefined ? NO_USAGE : usageOf(publicKey, ['encrypt', 'wrap']),
    openUsage: usageOf(key, ['decrypt', 'unwrap']),
    ...(publicKey === undefined
      ? {}
      : { modulusBytes: (publicKey.getAttribute('modulus') as Buffer).length }),
  };
}

/** What the key of a version is, for messages: "an AES key for wrap/unwrap". */
export function describeKey(key: VersionKey): string {
  const usage = Object.entries(key.openUsage)
    .filter(([, allowed]) => allowed)
    .map(([name]) => name);
  return `an ${key.kind.toUpperCase()} key for ${usage.join('/') || 'nothing'}`;
}

export interface NewKey {
  readonly label: string;
  readonly id: Buffer;
  readonly rsaBits: number;
}

const KEY_OBJECT = { token: true, private: true, modifiable: false } as const;

/**
 * Creates a version's key inside the token, of the kind and usage `mechanism` needs. 'session'
 * makes session objects instead (CKA_TOKEN false: gone when the session closes), for
 * `hsm-probe`'s trials, which must leave the token as they found it.
 */
export async function generateFor(
  session: graphene.Session,
  mechanism: Pkcs11Mechanism,
  key: NewKey,
  lifetime: 'token' | 'session' = 'token',
): Promise<graphene.Key> {
  const named = { label: key.label, id: key.id, token: lifetime === 'token' };
  if (mechanism.keyKind === 'aes') {
    const usesWrap = mechanism.sealsWith === 'wrap';
    return session.generateKey(KeyGenMechanism.AES, {
      ...KEY_OBJECT,
      ...named,
      class: ObjectClass.SECRET_KEY,
      keyType: KeyType.AES,
      valueLen: 32,
      sensitive: true,
      extractable: false,
      encrypt: !usesWrap,
      decrypt: !usesWrap,
      wrap: usesWrap,
      unwrap: usesWrap,
    });
  }
  // RSA generation takes a while on a token: off the event loop.
  const pair = await new Promise<graphene.IKeyPair>((resolve, reject) =>
    session.generateKeyPair(
      KeyGenMechanism.RSA,
      {
        ...KEY_OBJECT,
        ...named,
        private: false,
        class: ObjectClass.PUBLIC_KEY,
        keyType: KeyType.RSA,
        modulusBits: key.rsaBits,
        publicExponent: Buffer.from([1, 0, 1]),
        encrypt: true,
        verify: false,
        wrap: false,
      },
      {
        ...KEY_OBJECT,
        ...named,
        class: ObjectClass.PRIVATE_KEY,
        keyType: KeyType.RSA,
        sensitive: true,
        extractable: false,
        decrypt: true,
        sign: false,
        unwrap: false,
      },
      settle(resolve, reject),
    ),
  );
  return pair.privateKey;
}
