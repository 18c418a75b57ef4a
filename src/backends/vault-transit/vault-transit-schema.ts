import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  envVarName,
  exactlyOne,
  checkVariantKeys,
  remoteServiceFields,
  strict,
  type RuleViolation,
  type VariantKeys,
} from '../config-schema.ts';

const vaultPath = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$',
});

const vaultAuthMethods = ['token', 'approle', 'jwt', 'cert'] as const;
export type VaultAuthMethod = (typeof vaultAuthMethods)[number];

const vaultAuthSchema = Type.Object(
  {
    method: Type.Union(vaultAuthMethods.map(method => Type.Literal(method))),
    /** Where the auth method is mounted; defaults to its own name (approle, jwt, cert). */
    mount: Type.Optional(vaultPath),
    tokenFile: Type.Optional(absolutePath),
    tokenEnv: Type.Optional(envVarName),
    roleId: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    secretIdFile: Type.Optional(absolutePath),
    /** The jwt role, or the cert role name (optional for cert: Vault then tries all). */
    role: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    jwtFile: Type.Optional(absolutePath),
  },
  strict,
);
export type VaultAuthConfig = Static<typeof vaultAuthSchema>;

export const vaultTransitBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('vault-transit'),
    /** Scheme, host and port only, e.g. https://vault.example:8200. */
    address: Type.String({ pattern: '^https?://[^/?#]+$' }),
    mount: Type.String({ ...vaultPath, default: 'transit' }),
    key: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.-]+$' }),
    namespace: Type.Optional(vaultPath),
    tls: Type.Optional(
      Type.Object(
        {
          caFile: Type.Optional(absolutePath),
          serverName: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
          certFile: Type.Optional(absolutePath),
          keyFile: Type.Optional(absolutePath),
        },
        strict,
      ),
    ),
    ...remoteServiceFields,
    createIfMissing: Type.Boolean({ default: false }),
    auth: vaultAuthSchema,
  },
  strict,
);
export type VaultTransitBackendConfig = Static<typeof vaultTransitBackendSchema>;

/** Which auth keys each method needs; any other auth key is a mistake worth naming. */
const authKeys: Record<VaultAuthMethod, VariantKeys> = {
  token: { required: [], allowed: ['tokenFile', 'tokenEnv'] },
  approle: { required: ['roleId', 'secretIdFile'], allowed: ['roleId', 'secretIdFile', 'mount'] },
  jwt: { required: ['role', 'jwtFile'], allowed: ['role', 'jwtFile', 'mount'] },
  cert: { required: [], allowed: ['role', 'mount'] },
};

export function checkVaultTransit(config: VaultTransitBackendConfig): RuleViolation | undefined {
  const { auth, tls } = config;
  const violation = checkVariantKeys(
    auth,
    { path: 'auth', tag: 'method', noun: 'auth method' },
    authKeys[auth.method],
  );
  if (violation !== undefined) return violation;
  if (auth.method === 'token') {
    const violation = exactlyOne(auth, 'tokenFile', 'tokenEnv', ' (a token is never written in the config)');
    if (violation !== undefined) return { path: 'auth', message: violation.message };
  }
  const https = config.address.startsWith('https://');
  if (tls !== undefined && !https) return { path: 'tls', message: 'TLS settings need an https:// address' };
  if ((tls?.certFile === undefined) !== (tls?.keyFile === undefined)) {
    return { path: 'tls', message: 'set both certFile and keyFile, or neither' };
  }
  if (auth.method === 'cert' && (tls?.certFile === undefined || !https)) {
    return {
      path: 'auth',
      message: 'auth method cert needs an https:// address and tls.certFile and tls.keyFile',
    };
  }
  return undefined;
}
