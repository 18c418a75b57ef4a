// An in-process fake of Google Cloud KMS for tests (Google ships no emulator). It serves the
// official `google.cloud.kms.v1.KeyManagementService` definitions that @google-cloud/kms
// ships, over TLS on 127.0.0.1, to the real client library, and is faithful where the broker
// depends on it: real AES-256-GCM per key version with AAD (tampering fails), version names
// in Encrypt, the version resolved from the ciphertext in Decrypt, CRC32C fields, key
// versions and the primary, and Google's authentication: service-account keys sign their own
// JWTs (verified here against the account's public key, as Google does) and external accounts
// exchange a subject token at an STS token endpoint this fake serves over HTTP. Each account
// holds a set of IAM permissions; faults (status codes, delays, corrupted responses) can be
// injected per method, and the server can be stopped and started again on its port.
import { createCipheriv, createDecipheriv, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { crc32c } from '../../src/backends/gcp-kms/crc32c.ts';
import { createCa, issueCertificate } from './x509.ts';

const require = createRequire(import.meta.url);
const PROTO_DIRS = [
  join(dirname(require.resolve('@google-cloud/kms/package.json')), 'build', 'protos'),
  join(dirname(dirname(dirname(require.resolve('google-gax')))), 'build', 'protos'),
];

/** The IAM permission each implemented method needs. */
const permissionOf = {
  GetCryptoKey: 'cloudkms.cryptoKeys.get',
  CreateCryptoKey: 'cloudkms.cryptoKeys.create',
  UpdateCryptoKeyPrimaryVersion: 'cloudkms.cryptoKeys.update',
  ListCryptoKeyVersions: 'cloudkms.cryptoKeyVersions.list',
  GetCryptoKeyVersion: 'cloudkms.cryptoKeyVersions.get',
  CreateCryptoKeyVersion: 'cloudkms.cryptoKeyVersions.create',
  Encrypt: 'cloudkms.cryptoKeyVersions.useToEncrypt',
  Decrypt: 'cloudkms.cryptoKeyVersions.useToDecrypt',
} as const;
export type FakeMethod = keyof typeof permissionOf;
export const ALL_PERMISSIONS: readonly string[] = Object.values(permissionOf);
/** What roles/cloudkms.cryptoKeyEncrypterDecrypter plus roles/cloudkms.viewer grant the broker. */
export const BROKER_PERMISSIONS: readonly string[] = [
  'cloudkms.cryptoKeys.get',
  'cloudkms.cryptoKeyVersions.list',
  'cloudkms.cryptoKeyVersions.useToEncrypt',
  'cloudkms.cryptoKeyVersions.useToDecrypt',
];

type VersionState = 'PENDING_GENERATION' | 'ENABLED' | 'DISABLED' | 'DESTROY_SCHEDULED' | 'DESTROYED';
/** Reads of a new HSM version before its generation completes (Cloud HSM generates asynchronously). */
const HSM_GENERATION_READS = 2;
interface Version {
  readonly id: number;
  /** GetCryptoKeyVersion reads left while PENDING_GENERATION. */
  pendingReads: number;
  readonly secret: Buffer;
  readonly createTime: { seconds: number; nanos: number };
  state: VersionState;
}
interface Key {
  readonly name: string;
  /** Put in every ciphertext, so that one key's ciphertext never opens under another key. */
  readonly uid: Buffer;
  readonly createTime: { seconds: number; nanos: number };
  readonly protectionLevel: 'SOFTWARE' | 'HSM';
  readonly versions: Version[];
  primary: number | undefined;
}
interface Fault {
  readonly methods: readonly FakeMethod[] | 'all';
  readonly kind: 'status' | 'corrupt';
  readonly code: grpc.status;
  remaining: number;
}

export interface FakeFault {
  /** Methods the fault hits (all when omitted). */
  readonly methods?: readonly FakeMethod[];
  /** How many calls it hits. */
  readonly count: number;
  /** Answer with this status (RESOURCE_EXHAUSTED, UNAVAILABLE, ...). */
  readonly code?: grpc.status;
  /** Or answer, but with one byte of the payload flipped (the checksum left as it was). */
  readonly corrupt?: boolean;
}

export interface GcpKmsFake {
  /** `https://127.0.0.1:<port>`, for the backend's `endpoint`. */
  readonly endpoint: string;
  /** The STS token endpoint, plain HTTP on loopback. */
  readonly tokenUrl: string;
  /** The fake's test CA, for the backend's `caFile`: trusted by that backend alone. */
  readonly caFile: string;
  /** Environment for a broker that talks to this fake: no metadata server to look for. */
  readonly env: NodeJS.ProcessEnv;
  keyName(key: string, keyRing?: string): string;
  /** A symmetric key with version 1 (enabled) as primary; HSM keys generate later versions asynchronously. */
  createKey(name: string, protectionLevel?: 'SOFTWARE' | 'HSM'): void;
  /** What `gcloud kms keys versions create --primary` does: a new version, made primary. */
  rotate(name: string): string;
  setVersionState(name: string, version: number, state: VersionState): void;
  primary(name: string): number | undefined;
  /** A service-account key file for an account holding `permissions`. */
  serviceAccount(permissions: readonly string[], name?: string): string;
  /** An external-account file whose subject token (in its own file) the STS accepts. */
  externalAccount(permissions: readonly string[]): { credentialsFile: string; subjectTokenFile: string };
  fail(fault: FakeFault): void;
  /** Drops the faults not used up yet. */
  clearFaults(): void;
  /** Every call waits this long before it is answered. */
  setDelay(ms: number): void;
  /** Calls answered so far, per method (faulted ones included). */
  calls(method: FakeMethod): number;
  /** The most calls that were in progress at once since the last resetPeak(). */
  maxInFlight(): number;
  resetPeak(): void;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startGcpKmsFake(): Promise<GcpKmsFake> {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-gcp-'));
  const ca = createCa(join(dir, 'ca'), 'fake Cloud KMS CA', 'ec');
  const leaf = issueCertificate(ca, join(dir, 'tls'), {
    commonName: '127.0.0.1',
    usage: 'server',
    altNames: ['IP:127.0.0.1'],
  });
  const tls = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: readFileSync(leaf.keyFile), cert_chain: readFileSync(leaf.certFile) }],
    false,
  );
  const definition = loadSync('google/cloud/kms/v1/service.proto', {
    includeDirs: PROTO_DIRS,
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const service = definition['google.cloud.kms.v1.KeyManagementService'] as grpc.ServiceDefinition;

  const keys = new Map<string, Key>();
  /** Principals by service-account key id (self-signed JWTs) or STS access token. */
  const keyIds = new Map<string, { email: string; publicKey: string; permissions: Set<string> }>();
  const subjectTokens = new Map<string, Set<string>>();
  const accessTokens = new Map<string, Set<string>>();
  const faults: Fault[] = [];
  const counts = new Map<FakeMethod, number>();
  let delayMs = 0;
  let inFlight = 0;
  let peakInFlight = 0;
  let accounts = 0;

  /** The caller's permissions, or the status that refuses it. */
  function authenticate(metadata: grpc.Metadata): Set<string> | grpc.StatusObject {
    const header = String(metadata.get('authorization')[0] ?? '');
    const token = header.startsWith('Bearer ') ? header.slice(7) : '';
    const permissions = accessTokens.get(token) ?? verifySelfSignedJwt(token);
    return (
      permissions ?? status(grpc.status.UNAUTHENTICATED, 'Request had invalid authentication credentials.')
    );
  }

  function verifySelfSignedJwt(token: string): Set<string> | undefined {
    const [head, body, signature] = token.split('.');
    if (head === undefined || body === undefined || signature === undefined) return undefined;
    try {
      const header = JSON.parse(Buffer.from(head, 'base64url').toString()) as { alg?: string; kid?: string };
      const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as { iss?: string; exp?: number };
      const account = keyIds.get(header.kid ?? '');
      if (header.alg !== 'RS256' || account === undefined || claims.iss !== account.email) return undefined;
      if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now()) return undefined;
      const valid = verify(
        'RSA-SHA256',
        Buffer.from(`${head}.${body}`),
        account.publicKey,
        Buffer.from(signature, 'base64url'),
      );
      return valid ? account.permissions : undefined;
    } catch {
      return undefined;
    }
  }

  function key(name: string): Key | grpc.StatusObject {
    return keys.get(name) ?? status(grpc.status.NOT_FOUND, `CryptoKey ${name} not found.`);
  }

  function versionMessage(owner: Key, version: Version): object {
    return {
      name: `${owner.name}/cryptoKeyVersions/${version.id}`,
      state: version.state,
      protectionLevel: owner.protectionLevel,
      algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION',
      createTime: version.createTime,
      generateTime: version.createTime,
    };
  }

  function keyMessage(owner: Key): object {
    const primary = owner.versions.find(version => version.id === owner.primary);
    return {
      name: owner.name,
      purpose: 'ENCRYPT_DECRYPT',
      createTime: owner.createTime,
      versionTemplate: { algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION', protectionLevel: owner.protectionLevel },
      ...(primary !== undefined && { primary: versionMessage(owner, primary) }),
    };
  }

  /** A new version; an HSM key's starts PENDING_GENERATION unless `ready`. */
  function addVersion(owner: Key, ready = true): Version {
    const pending = owner.protectionLevel === 'HSM' && !ready;
    const version: Version = {
      id: owner.versions.length + 1,
      secret: randomBytes(32),
      createTime: now(),
      state: pending ? 'PENDING_GENERATION' : 'ENABLED',
      pendingReads: pending ? HSM_GENERATION_READS : 0,
    };
    owner.versions.push(version);
    return version;
  }

  function addKey(name: string, protectionLevel: Key['protectionLevel'] = 'SOFTWARE'): Key {
    const owner: Key = {
      name,
      uid: randomBytes(4),
      createTime: now(),
      protectionLevel,
      versions: [],
      primary: undefined,
    };
    keys.set(name, owner);
    owner.primary = addVersion(owner).id;
    return owner;
  }

  /** Resolves `name` (a key, or one of its versions) to the version Encrypt uses. */
  function encryptingVersion(name: string): { owner: Key; version: Version } | grpc.StatusObject {
    const match = /^(.+)\/cryptoKeyVersions\/(\d+)$/.exec(name);
    const owner = key(match?.[1] ?? name);
    if (!('versions' in owner)) return owner;
    const id = match === null ? owner.primary : Number(match[2]);
    const version = owner.versions.find(candidate => candidate.id === id);
    if (version === undefined) return status(grpc.status.NOT_FOUND, `CryptoKeyVersion ${name} not found.`);
    if (version.state !== 'ENABLED')
      return status(
        grpc.status.FAILED_PRECONDITION,
        `${name} is not enabled, current state is: ${version.state}.`,
      );
    return { owner, version };
  }

  const checksumMismatch = (field: string) => status(grpc.status.INVALID_ARGUMENT, `${field} did not match.`);
  const checksumOk = (value: { value?: string } | null | undefined, data: Buffer) =>
    value === null || value === undefined || String(value.value) === String(crc32c(data));

  type Handler = (request: Record<string, unknown>) => object | grpc.StatusObject;
  const handlers: Record<FakeMethod, Handler> = {
    GetCryptoKey: request => {
      const owner = key(String(request.name));
      return 'versions' in owner ? keyMessage(owner) : owner;
    },
    CreateCryptoKey: request => {
      const name = `${String(request.parent)}/cryptoKeys/${String(request.cryptoKeyId)}`;
      if (keys.has(name)) return status(grpc.status.ALREADY_EXISTS, `CryptoKey ${name} already exists.`);
      return keyMessage(addKey(name));
    },
    UpdateCryptoKeyPrimaryVersion: request => {
      const owner = key(String(request.name));
      if (!('versions' in owner)) return owner;
      const version = owner.versions.find(candidate => String(candidate.id) === request.cryptoKeyVersionId);
      if (version === undefined) return status(grpc.status.NOT_FOUND, 'CryptoKeyVersion not found.');
      if (version.state !== 'ENABLED')
        return status(grpc.status.FAILED_PRECONDITION, 'The primary version must be enabled.');
      owner.primary = version.id;
      return keyMessage(owner);
    },
    ListCryptoKeyVersions: request => {
      const owner = key(String(request.parent));
      if (!('versions' in owner)) return owner;
      const pageSize = Math.min(Number(request.pageSize) || 2, 1000);
      const start = Number(request.pageToken || 0);
      const page = owner.versions.slice(start, start + pageSize);
      const next = start + pageSize < owner.versions.length ? String(start + pageSize) : '';
      return {
        cryptoKeyVersions: page.map(version => versionMessage(owner, version)),
        nextPageToken: next,
        totalSize: owner.versions.length,
      };
    },
    GetCryptoKeyVersion: request => {
      const match = /^(.+)\/cryptoKeyVersions\/(\d+)$/.exec(String(request.name));
      const owner = key(match?.[1] ?? '');
      if (!('versions' in owner)) return owner;
      const version = owner.versions.find(candidate => candidate.id === Number(match?.[2]));
      if (version === undefined) return status(grpc.status.NOT_FOUND, 'CryptoKeyVersion not found.');
      if (version.state === 'PENDING_GENERATION' && --version.pendingReads <= 0) version.state = 'ENABLED';
      return versionMessage(owner, version);
    },
    CreateCryptoKeyVersion: request => {
      const owner = key(String(request.parent));
      return 'versions' in owner ? versionMessage(owner, addVersion(owner, false)) : owner;
    },
    Encrypt: request => {
      const target = encryptingVersion(String(request.name));
      if (!('owner' in target)) return target;
      const plaintext = request.plaintext as Buffer;
      const aad = request.additionalAuthenticatedData as Buffer;
      if (!checksumOk(request.plaintextCrc32c as never, plaintext))
        return checksumMismatch('plaintext_crc32c');
      if (!checksumOk(request.additionalAuthenticatedDataCrc32c as never, aad))
        return checksumMismatch('additional_authenticated_data_crc32c');
      const header = Buffer.alloc(9);
      header[0] = 0x47;
      target.owner.uid.copy(header, 1);
      header.writeUInt32BE(target.version.id, 5);
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', target.version.secret, iv);
      cipher.setAAD(Buffer.concat([header, aad]));
      const ciphertext = Buffer.concat([
        header,
        iv,
        cipher.update(plaintext),
        cipher.final(),
        cipher.getAuthTag(),
      ]);
      return {
        name: `${target.owner.name}/cryptoKeyVersions/${target.version.id}`,
        ciphertext,
        ciphertextCrc32c: { value: String(crc32c(ciphertext)) },
        verifiedPlaintextCrc32c: request.plaintextCrc32c !== null,
        verifiedAdditionalAuthenticatedDataCrc32c: request.additionalAuthenticatedDataCrc32c !== null,
        protectionLevel: 'SOFTWARE',
      };
    },
    Decrypt: request => {
      const owner = key(String(request.name));
      if (!('versions' in owner)) return owner;
      const ciphertext = request.ciphertext as Buffer;
      const aad = request.additionalAuthenticatedData as Buffer;
      if (!checksumOk(request.ciphertextCrc32c as never, ciphertext))
        return checksumMismatch('ciphertext_crc32c');
      if (!checksumOk(request.additionalAuthenticatedDataCrc32c as never, aad))
        return checksumMismatch('additional_authenticated_data_crc32c');
      const invalid = status(grpc.status.INVALID_ARGUMENT, 'Decryption failed: the ciphertext is invalid.');
      if (
        ciphertext.length < 9 + 12 + 16 ||
        ciphertext[0] !== 0x47 ||
        !ciphertext.subarray(1, 5).equals(owner.uid)
      )
        return invalid;
      const version = owner.versions.find(candidate => candidate.id === ciphertext.readUInt32BE(5));
      if (version === undefined || version.state === 'DESTROYED') return invalid;
      if (version.state !== 'ENABLED')
        return status(
          grpc.status.FAILED_PRECONDITION,
          `The CryptoKeyVersion is not enabled: ${version.state}.`,
        );
      try {
        const decipher = createDecipheriv('aes-256-gcm', version.secret, ciphertext.subarray(9, 21));
        decipher.setAAD(Buffer.concat([ciphertext.subarray(0, 9), aad]));
        decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
        const plaintext = Buffer.concat([
          decipher.update(ciphertext.subarray(21, ciphertext.length - 16)),
          decipher.final(),
        ]);
        return {
          plaintext,
          plaintextCrc32c: { value: String(crc32c(plaintext)) },
          usedPrimary: version.id === owner.primary,
          protectionLevel: 'SOFTWARE',
        };
      } catch {
        return invalid;
      }
    },
  };

  function takeFault(method: FakeMethod): Fault | undefined {
    const fault = faults.find(
      candidate =>
        candidate.remaining > 0 && (candidate.methods === 'all' || candidate.methods.includes(method)),
    );
    if (fault !== undefined) fault.remaining--;
    return fault;
  }

  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(handlers) as FakeMethod[]) {
    implementation[method] = (
      call: grpc.ServerUnaryCall<Record<string, unknown>, object>,
      callback: grpc.sendUnaryData<object>,
    ) => {
      counts.set(method, (counts.get(method) ?? 0) + 1);
      peakInFlight = Math.max(peakInFlight, ++inFlight);
      const reply: grpc.sendUnaryData<object> = (...args) => {
        inFlight--;
        callback(...args);
      };
      const answer = () => {
        const permissions = authenticate(call.metadata);
        if (!(permissions instanceof Set)) return reply(permissions);
        const fault = takeFault(method);
        if (fault?.kind === 'status') return reply(status(fault.code, `injected ${grpc.status[fault.code]}`));
        if (!permissions.has(permissionOf[method])) {
          return reply(
            status(
              grpc.status.PERMISSION_DENIED,
              `Permission '${permissionOf[method]}' denied on resource (or it may not exist).`,
            ),
          );
        }
        const result = handlers[method](call.request);
        if (isStatus(result)) return reply(result);
        reply(null, fault?.kind === 'corrupt' ? corrupt(result) : result);
      };
      if (delayMs > 0) setTimeout(answer, delayMs);
      else answer();
    };
  }

  const sts = await startSts(subjectTokens, accessTokens);
  let server: grpc.Server | undefined;
  let port = 0;
  const start = async () => {
    const next = new grpc.Server();
    next.addService(service, implementation);
    port = await new Promise<number>((resolve, reject) =>
      next.bindAsync(`127.0.0.1:${port}`, tls, (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    server = next;
  };
  await start();

  const writeJson = (name: string, value: object) => {
    const path = join(dir, name);
    writeFileSync(path, JSON.stringify(value, null, 2), { mode: 0o600 });
    return path;
  };
  const stop = () => {
    // Cuts every connection at once, as a crashed or unreachable server would.
    server?.forceShutdown();
    server = undefined;
    return Promise.resolve();
  };

  return {
    endpoint: `https://127.0.0.1:${port}`,
    tokenUrl: sts.url,
    caFile: ca.certFile,
    env: { ...process.env, METADATA_SERVER_DETECTION: 'none' },
    keyName: (name, keyRing = 'broker') =>
      `projects/test-project/locations/global/keyRings/${keyRing}/cryptoKeys/${name}`,
    createKey: (name, protectionLevel) => void addKey(name, protectionLevel),
    rotate(name) {
      const owner = keys.get(name);
      if (owner === undefined) throw new Error(`no key ${name}`);
      owner.primary = addVersion(owner).id;
      return String(owner.primary);
    },
    setVersionState(name, id, state) {
      const version = keys.get(name)?.versions.find(candidate => candidate.id === id);
      if (version === undefined) throw new Error(`no version ${id} of ${name}`);
      version.state = state;
    },
    primary: name => keys.get(name)?.primary,
    serviceAccount(permissions, name = `broker-${++accounts}`) {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const email = `${name}@test-project.iam.gserviceaccount.com`;
      const keyId = randomBytes(20).toString('hex');
      keyIds.set(keyId, {
        email,
        publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        permissions: new Set(permissions),
      });
      return writeJson(`${name}-${keyId.slice(0, 8)}.json`, {
        type: 'service_account',
        project_id: 'test-project',
        private_key_id: keyId,
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        client_email: email,
        client_id: '100000000000000000000',
        // The Cloud KMS client signs its own JWTs and never calls token_uri; if a library
        // change made it do so, the fake's HTTP server refuses it and the tests fail loudly
        // instead of reaching Google.
        token_uri: `${sts.url.replace('/v1/token', '')}/token`,
      });
    },
    externalAccount(permissions) {
      const subjectToken = randomBytes(24).toString('base64url');
      subjectTokens.set(subjectToken, new Set(permissions));
      const id = ++accounts;
      const subjectTokenFile = join(dir, `subject-token-${id}`);
      writeFileSync(subjectTokenFile, subjectToken, { mode: 0o600 });
      const credentialsFile = writeJson(`external-account-${id}.json`, {
        type: 'external_account',
        audience:
          '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/cluster/providers/k8s',
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        token_url: sts.url,
        credential_source: { file: subjectTokenFile },
      });
      return { credentialsFile, subjectTokenFile };
    },
    fail(fault) {
      faults.push({
        methods: fault.methods ?? 'all',
        kind: fault.corrupt === true ? 'corrupt' : 'status',
        code: fault.code ?? grpc.status.UNAVAILABLE,
        remaining: fault.count,
      });
    },
    clearFaults: () => void faults.splice(0),
    setDelay: ms => void (delayMs = ms),
    calls: method => counts.get(method) ?? 0,
    maxInFlight: () => peakInFlight,
    resetPeak: () => void (peakInFlight = inFlight),
    stop,
    start,
    async close() {
      await stop();
      await new Promise(resolve => sts.server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The STS token exchange of workload identity federation: a known subject token buys an access token. */
async function startSts(
  subjectTokens: ReadonlyMap<string, Set<string>>,
  accessTokens: Map<string, Set<string>>,
): Promise<{ url: string; server: HttpServer }> {
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      const permissions = subjectTokens.get(form.get('subject_token') ?? '');
      response.setHeader('content-type', 'application/json');
      if (request.url !== '/v1/token' || permissions === undefined) {
        response.statusCode = 400;
        response.end(
          JSON.stringify({ error: 'invalid_grant', error_description: 'The subject token is invalid.' }),
        );
        return;
      }
      const accessToken = randomBytes(24).toString('base64url');
      accessTokens.set(accessToken, permissions);
      response.end(
        JSON.stringify({
          access_token: accessToken,
          issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          token_type: 'Bearer',
          expires_in: 3600,
        }),
      );
    });
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('STS has no port');
  return { url: `http://127.0.0.1:${address.port}/v1/token`, server };
}

function isStatus(result: object): result is grpc.StatusObject {
  return 'code' in result && 'details' in result;
}

function status(code: grpc.status, details: string): grpc.StatusObject {
  return { code, details, metadata: new grpc.Metadata() };
}

/** Flips one byte of a response's payload, leaving its checksum as it was. */
function corrupt(result: object): object {
  const payload = result as { ciphertext?: Buffer; plaintext?: Buffer };
  const field = payload.ciphertext !== undefined ? 'ciphertext' : 'plaintext';
  const bytes = Buffer.from(payload[field] ?? Buffer.alloc(1));
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0x01;
  return { ...result, [field]: bytes };
}

function now(): { seconds: number; nanos: number } {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 + Math.floor(Math.random() * 1e6) };
}

/** A gcp-kms backend of the broker's config pointed at `fake`, authenticating with `credentialsFile`. */
export function gcpKmsBackend(
  fake: GcpKmsFake,
  keyName: string,
  credentialsFile: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    name: 'gcp',
    type: 'gcp-kms',
    keyName,
    credentialsFile,
    endpoint: fake.endpoint,
    caFile: fake.caFile,
    ...overrides,
  };
}
