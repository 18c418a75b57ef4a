// Bearer tokens for the admin API: read once from the files the config names, compared in
// constant time, each with a name (for audit records) and a role. `viewer` may read,
// `admin` may also change.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { BrokerConfig } from '../config/schema.ts';
import type { SecretReader } from '../secrets.ts';
import { BrokerError } from '../errors.ts';

export type Role = 'viewer' | 'admin';

export interface Caller {
  /** The token's name, plus the client certificate's subject when mTLS is on. */
  readonly name: string;
  readonly role: Role;
}

interface KnownToken {
  readonly name: string;
  readonly role: Role;
  readonly digest: Buffer;
}

export type Authenticator = (authorization: string | undefined) => Caller;

export function createAuthenticator(config: BrokerConfig['admin'], readSecret: SecretReader): Authenticator {
  const known: KnownToken[] = config.tokens.map(token => ({
    name: token.name,
    role: token.role,
    digest: digest(readSecret({ file: token.file }, `admin token ${token.name}`)),
  }));
  return authorization => {
    const presented = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
    if (presented === undefined) throw new BrokerError('UNAUTHORIZED', 'send Authorization: Bearer <token>');
    const candidate = digest(presented);
    // Compare against every token, matched or not, so timing says nothing about which.
    let match: KnownToken | undefined;
    for (const token of known)
      if (timingSafeEqual(token.digest, candidate) && match === undefined) match = token;
    if (match === undefined)
      throw new BrokerError('UNAUTHORIZED', 'the token is not one of the configured admin tokens');
    return { name: match.name, role: match.role };
  };
}

export function requireRole(caller: Caller, role: Role): void {
  if (role === 'admin' && caller.role !== 'admin') {
    throw new BrokerError('FORBIDDEN', `token ${caller.name} has the viewer role; this needs admin`);
  }
}

/** Fixed-length digests, so timingSafeEqual never sees different lengths. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
