// Keys put into a test token by hand, as an HSM administrator would import them.
import { randomBytes } from 'node:crypto';
import graphene from 'graphene-pk11';

/**
 * An AES key given to the token by value (C_CreateObject), as an import is: safe (sensitive,
 * never extractable) or not.
 */
export function importAesKey(session: graphene.Session, label: string, safe: boolean): void {
  session.create({
    class: graphene.ObjectClass.SECRET_KEY,
    keyType: graphene.KeyType.AES,
    value: randomBytes(32),
    label,
    id: randomBytes(8),
    token: true,
    private: true,
    sensitive: safe,
    extractable: !safe,
    encrypt: true,
    decrypt: true,
  });
}
