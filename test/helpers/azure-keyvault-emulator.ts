// An in-process emulator of the Azure Key Vault keys API subset the broker uses, and of the
// Entra ID token endpoint in front of it, over HTTPS on 127.0.0.1 with a certificate from a
// throwaway CA that only the broker's client trusts. It stands in for Lowkey Vault, whose
// app artifact this machine's Maven mirror does not serve.
//
// What it does as Key Vault does: the 401 Bearer challenge naming the resource and the
// tenant's authority, client-credential tokens (secret or federated assertion) checked per
// request, 403 for an operation the caller's permissions lack, keys with versions (32-hex
// ids), create and rotate, wrapkey/unwrapkey with real RSA-OAEP-256 and AES key wrap, 400
// for a wrapped key that does not open, JSON error bodies, and any api-version the SDK sends.
// Faults: 429 with Retry-After or 5xx for the next requests, and stop/restart on one port.
import { createCipheriv, createDecipheriv, generateKeyPair, randomBytes, randomUUID } from 'node:crypto';
import { constants, type KeyObject, createSecretKey, publicEncrypt, privateDecrypt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { createCa, issueCertificate } from './x509.ts';
import { ServiceError } from './service-error.ts';

export type KeyPermission = 'get' | 'list' | 'create' | 'rotate' | 'wrapKey' | 'unwrapKey';
export const ALL_PERMISSIONS: readonly KeyPermission[] = [
  'get',
  'list',
  'create',
  'rotate',
  'wrapKey',
  'unwrapKey',
];

/** Requests the emulator answered, by operation, for counting calls per broker operation. */
export type Operation =
  'token' | 'challenge' | 'get' | 'list' | 'create' | 'rotate' | 'wrapkey' | 'unwrapkey';

export interface AzureKeyVaultEmulator {
  /** The vault URL, also the authority host: https://127.0.0.1:<port>. */
  readonly url: string;
  readonly caFile: string;
  readonly tenantId: string;
  readonly apiVersions: ReadonlySet<string>;
  /** Registers an application (client id) with a secret and the key permissions it has. */
  addClient(secret: string, permissions?: readonly KeyPermission[]): string;
  /** Registers a workload identity: a client that presents this federated token. */
  addFederatedClient(assertion: string, permissions?: readonly KeyPermission[]): string;
  /** Creates an RSA key directly in the vault, as an operator would before the broker starts. */
  createKey(keyName: string, size?: number): Promise<string>;
  /** Creates a new version of a key directly in the vault (a rotation done outside the broker). */
  rotate(keyName: string): Promise<string>;
  versions(keyName: string): readonly string[];
  count(operation: Operation): number;
  /** Answers the next `count` vault requests with `status` (and Retry-After for 429). */
  failNext(count: number, status: number, retryAfterSeconds?: number): void;
  /** Vault requests that got an injected fault so far. */
  readonly injected: number;
  stop(): Promise<void>;
  /** Listens again on the same port, with the same keys and tokens. */
  restart(): Promise<void>;
}

interface Version {
  readonly version: string;
  readonly kty: 'RSA' | 'RSA-HSM' | 'oct-HSM';
  readonly key: KeyObject;
  readonly publicKey?: KeyObject;
  readonly created: number;
}

interface Client {
  readonly secret?: string;
  readonly assertion?: string;
  readonly permissions: ReadonlySet<KeyPermission>;
}

const generateRsa = promisify(generateKeyPair);
const MAX_BODY_BYTES = 64 * 1024;
const KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');

export async function startAzureKeyVaultEmulator(dir: string): Promise<AzureKeyVaultEmulator> {
  const ca = createCa(`${dir}/ca`, 'kms-broker Key Vault emulator CA');
  const cert = issueCertificate(ca, `${dir}/server`, {
    commonName: 'localhost',
    usage: 'server',
    altNames: ['DNS:localhost', 'IP:127.0.0.1'],
  });
  const tenantId = randomUUID();
  const keys = new Map<string, Version[]>();
  const clients = new Map<string, Client>();
  const tokens = new Map<string, string>();
  const counts = new Map<Operation, number>();
  const apiVersions = new Set<string>();
  const faults = { remaining: 0, status: 0, retryAfter: undefined as number | undefined, injected: 0 };
  const sockets = new Set<Duplex>();
  let url = '';
  let port = 0;
  // Versions of one key never share a second here, so "newer" by creation time is exact.
  let lastCreated = 0;

  const hit = (operation: Operation) => counts.set(operation, (counts.get(operation) ?? 0) + 1);

  async function newVersion(name: string, kty: Version['kty'], size: number): Promise<Version> {
    const created = Math.max(Math.floor(Date.now() / 1000), lastCreated + 1);
    lastCreated = created;
    const version = randomBytes(16).toString('hex');
    let entry: Version;
    if (kty === 'oct-HSM') {
      entry = { version, kty, key: createSecretKey(randomBytes(size / 8)), created };
    } else {
      const pair = await generateRsa('rsa', { modulusLength: size });
      entry = { version, kty, key: pair.privateKey, publicKey: pair.publicKey, created };
    }
    keys.set(name, [...(keys.get(name) ?? []), entry]);
    return entry;
  }

  function bundle(name: string, entry: Version): object {
    const kid = `${url}/keys/${name}/${entry.version}`;
    const material =
      entry.publicKey === undefined
        ? {}
        : (({ n, e }) => ({ n, e }))(entry.publicKey.export({ format: 'jwk' }));
    return {
      key: { kid, kty: entry.kty, key_ops: ['wrapKey', 'unwrapKey'], ...material },
      attributes: attributes(entry),
    };
  }

  const attributes = (entry: Version) => ({
    enabled: true,
    created: entry.created,
    updated: entry.created,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: 90,
    exportable: false,
  });

  function findVersion(name: string, version: string | undefined): Version {
    const versions = keys.get(name);
    const entry = version === undefined ? versions?.at(-1) : versions?.find(v => v.version === version);
    if (entry === undefined)
      throw new ServiceError(
        404,
        'KeyNotFound',
        `A key with (name/id) ${name} was not found in this key vault.`,
      );
    return entry;
  }

  function wrapKey(entry: Version, alg: unknown, value: Buffer): Buffer {
    if (alg === 'RSA-OAEP-256' && entry.publicKey !== undefined) {
      return publicEncrypt(
        { key: entry.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
        value,
      );
    }
    if (alg === 'A256KW' && entry.kty === 'oct-HSM') {
      if (value.length < 16 || value.length % 8 !== 0)
        throw new ServiceError(400, 'BadParameter', 'Invalid key length.');
      const cipher = createCipheriv('id-aes256-wrap', entry.key, KW_IV);
      return Buffer.concat([cipher.update(value), cipher.final()]);
    }
    throw new ServiceError(400, 'BadParameter', `Algorithm ${String(alg)} is not supported by this key.`);
  }

  function unwrapKey(entry: Version, alg: unknown, value: Buffer): Buffer {
    try {
      if (alg === 'RSA-OAEP-256' && entry.publicKey !== undefined) {
        return privateDecrypt(
          { key: entry.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
          value,
        );
      }
      if (alg === 'A256KW' && entry.kty === 'oct-HSM') {
        const decipher = createDecipheriv('id-aes256-wrap', entry.key, KW_IV);
        return Buffer.concat([decipher.update(value), decipher.final()]);
      }
    } catch {
      throw new ServiceError(400, 'BadParameter', 'The parameter is incorrect.');
    }
    throw new ServiceError(400, 'BadParameter', `Algorithm ${String(alg)} is not supported by this key.`);
  }

  function caller(request: IncomingMessage): Client | undefined {
    const match = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '');
    const clientId = match?.[1] === undefined ? undefined : tokens.get(match[1]);
    return clientId === undefined ? undefined : clients.get(clientId);
  }

  function need(client: Client, permission: KeyPermission): void {
    if (!client.permissions.has(permission)) {
      throw new ServiceError(
        403,
        'Forbidden',
        `The user, group or application does not have keys ${permission} permission.`,
      );
    }
  }

  /** Entra ID: the client-credentials grant, by secret or by a federated assertion. */
  function token(form: URLSearchParams): unknown {
    hit('token');
    const client = clients.get(form.get('client_id') ?? '');
    const secretOk = client?.secret !== undefined && form.get('client_secret') === client.secret;
    const assertionOk = client?.assertion !== undefined && form.get('client_assertion') === client.assertion;
    if (form.get('grant_type') !== 'client_credentials' || !(secretOk || assertionOk)) {
      throw new ServiceError(401, 'invalid_client', 'AADSTS7000215: Invalid client secret provided.');
    }
    if (form.get('scope') !== `${url}/.default`)
      throw new ServiceError(400, 'invalid_scope', 'AADSTS70011: invalid scope.');
    const accessToken = randomBytes(24).toString('base64url');
    tokens.set(accessToken, form.get('client_id') ?? '');
    return { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: accessToken };
  }

  async function vault(
    request: IncomingMessage,
    path: string,
    body: Record<string, unknown>,
  ): Promise<unknown> {
    const client = caller(request);
    if (client === undefined) {
      hit('challenge');
      throw new ServiceError(401, 'Unauthorized', 'AKV10000: Request is missing a Bearer or PoP token.');
    }
    if (faults.remaining > 0) {
      faults.remaining--;
      faults.injected++;
      throw new ServiceError(
        faults.status,
        faults.status === 429 ? 'Throttled' : 'ServiceUnavailable',
        'Injected.',
      );
    }
    // /keys/{name}, /keys/{name}/{version | versions | create | rotate}, /keys/{name}/{version}/{action}
    const [, name, second, action] =
      /^\/keys\/([0-9A-Za-z-]+)(?:\/([^/]+))?(?:\/([a-z]+))?$/.exec(path) ?? [];
    if (name === undefined) throw new ServiceError(404, 'NotFound', 'No such route.');
    const method = request.method ?? 'GET';
    if (method === 'GET' && second === 'versions') {
      hit('list');
      need(client, 'list');
      const versions = keys.get(name);
      if (versions === undefined)
        throw new ServiceError(
          404,
          'KeyNotFound',
          `A key with (name/id) ${name} was not found in this key vault.`,
        );
      return {
        value: versions.map(entry => ({
          kid: `${url}/keys/${name}/${entry.version}`,
          attributes: attributes(entry),
        })),
        nextLink: null,
      };
    }
    if (method === 'GET') {
      hit('get');
      need(client, 'get');
      return bundle(name, findVersion(name, second));
    }
    if (method === 'POST' && (second === 'create' || second === 'rotate')) {
      hit(second);
      need(client, second);
      const current = keys.get(name)?.at(-1);
      const kty = second === 'create' ? (body.kty as Version['kty']) : current?.kty;
      if (kty !== 'RSA' && kty !== 'RSA-HSM' && kty !== 'oct-HSM')
        throw new ServiceError(400, 'BadParameter', 'Invalid kty.');
      const size = Number(body.key_size ?? (kty === 'oct-HSM' ? 256 : 2048));
      return bundle(name, await newVersion(name, kty, size));
    }
    if (method === 'POST' && (action === 'wrapkey' || action === 'unwrapkey') && second !== undefined) {
      hit(action);
      need(client, action === 'wrapkey' ? 'wrapKey' : 'unwrapKey');
      const entry = findVersion(name, second);
      const value = Buffer.from(typeof body.value === 'string' ? body.value : '', 'base64url');
      const result =
        action === 'wrapkey' ? wrapKey(entry, body.alg, value) : unwrapKey(entry, body.alg, value);
      return { kid: `${url}/keys/${name}/${entry.version}`, value: result.toString('base64url') };
    }
    throw new ServiceError(405, 'MethodNotAllowed', 'Not supported by the emulator.');
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const target = new URL(request.url ?? '/', url);
    const raw = await readBody(request);
    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      response.end(JSON.stringify(payload));
    };
    try {
      if (target.pathname === `/${tenantId}/v2.0/.well-known/openid-configuration`) {
        const base = `${url}/${tenantId}`;
        return send(200, {
          issuer: `${base}/v2.0`,
          token_endpoint: `${base}/oauth2/v2.0/token`,
          authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
          end_session_endpoint: `${base}/oauth2/v2.0/logout`,
          jwks_uri: `${base}/discovery/v2.0/keys`,
          response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
        });
      }
      if (target.pathname === `/${tenantId}/oauth2/v2.0/token` && request.method === 'POST') {
        return send(200, token(new URLSearchParams(raw)));
      }
      const apiVersion = target.searchParams.get('api-version');
      if (apiVersion === null)
        throw new ServiceError(400, 'BadParameter', 'The api-version query parameter is required.');
      apiVersions.add(apiVersion);
      const body = raw === '' ? {} : (JSON.parse(raw) as Record<string, unknown>);
      return send(200, await vault(request, target.pathname.replace(/\/$/, ''), body));
    } catch (error) {
      const { status, code, message } =
        error instanceof ServiceError
          ? error
          : new ServiceError(400, 'BadParameter', 'The request body is not valid JSON.');
      const headers: Record<string, string> = {};
      if (status === 401 && code === 'Unauthorized') {
        headers['www-authenticate'] = `Bearer authorization="${url}/${tenantId}", resource="${url}"`;
      }
      if (status === 429 && faults.retryAfter !== undefined)
        headers['retry-after'] = String(faults.retryAfter);
      // Entra ID answers OAuth errors; Key Vault its own error object.
      const payload = code.startsWith('invalid_')
        ? { error: code, error_description: message, error_codes: [7000215] }
        : { error: { code, message } };
      return send(status, payload, headers);
    }
  }

  const server: Server = createServer(
    { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) },
    (request, response) => void handle(request, response),
  );
  server.on('connection', socket => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const listen = (onPort: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: onPort, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  port = (server.address() as { port: number }).port;
  url = `https://127.0.0.1:${port}`;

  const register = (client: Client) => {
    const clientId = randomUUID();
    clients.set(clientId, client);
    return clientId;
  };
  let running = true;

  return {
    url,
    caFile: ca.certFile,
    tenantId,
    apiVersions,
    addClient: (secret, permissions = ALL_PERMISSIONS) =>
      register({ secret, permissions: new Set(permissions) }),
    addFederatedClient: (assertion, permissions = ALL_PERMISSIONS) =>
      register({ assertion, permissions: new Set(permissions) }),
    createKey: async (keyName, size = 2048) => (await newVersion(keyName, 'RSA', size)).version,
    async rotate(keyName) {
      const current = findVersion(keyName, undefined);
      const size =
        current.kty === 'oct-HSM' ? 256 : (current.publicKey?.asymmetricKeyDetails?.modulusLength ?? 2048);
      return (await newVersion(keyName, current.kty, size)).version;
    },
    versions: keyName => (keys.get(keyName) ?? []).map(entry => entry.version),
    count: operation => counts.get(operation) ?? 0,
    failNext(count, status, retryAfterSeconds) {
      Object.assign(faults, { remaining: count, status, retryAfter: retryAfterSeconds });
    },
    get injected() {
      return faults.injected;
    },
    async stop() {
      if (!running) return;
      running = false;
      const closed = new Promise<void>(resolve => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
    async restart() {
      if (running) return;
      await listen(port);
      running = true;
    },
  };
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) request.destroy(new Error('request body too large'));
      else chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}
