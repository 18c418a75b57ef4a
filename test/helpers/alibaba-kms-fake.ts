// An in-process fake of Alibaba Cloud KMS (API 2016-01-20, RPC style), built from the
// request and response models @alicloud/kms20160120 ships and the RPC protocol of
// @alicloud/openapi-client: POST / with the parameters in the query, HMAC-SHA1 signature
// v1.0 checked against known AccessKeys, JSON answers and errors ({Code, Message,
// RequestId} with the HTTP status). Keys hold real AES-256-GCM versions; EncryptionContext
// is the AAD; a CiphertextBlob is KeyVersionId || IV || ciphertext || tag, as Alibaba's
// documented examples show. Faults (throttling, 5xx) are injected per request.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ServiceError } from './service-error.ts';

export const FAKE_REGION = 'cn-hangzhou';
const ACCOUNT = '1234567890123456';
const VERSION_ID_LENGTH = 36;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;

export type FakeAction = 'DescribeKey' | 'ListKeyVersions' | 'CreateKeyVersion' | 'Encrypt' | 'Decrypt';

interface FakeVersion {
  readonly id: string;
  readonly createdAt: Date;
  readonly material: Buffer;
}

interface FakeKey {
  readonly id: string;
  state: string;
  readonly versions: FakeVersion[];
  primary: string;
}

interface Principal {
  readonly secret: string;
  /** Actions this AccessKey's RAM policy allows; undefined = all. */
  readonly allowed?: ReadonlySet<FakeAction>;
}

export interface InjectedFault {
  /** Only requests for this action (default: any). */
  readonly action?: FakeAction;
  readonly status: number;
  readonly code: string;
  /** How many matching requests fail (default: until cleared). */
  readonly times?: number;
}

export class AlibabaKmsFake {
  readonly #server: Server;
  readonly #principals = new Map<string, Principal>();
  readonly #keys = new Map<string, FakeKey>();
  readonly #aliases = new Map<string, string>();
  #faults: { fault: InjectedFault; left: number }[] = [];
  /** Requests served, by action (faults included), to check which calls the broker makes. */
  readonly calls = new Map<string, number>();

  private constructor() {
    this.#server = createServer((request, response) => void this.#handle(request, response));
  }

  static async start(port = 0): Promise<AlibabaKmsFake> {
    const fake = new AlibabaKmsFake();
    await new Promise<void>((resolve, reject) => {
      fake.#server.once('error', reject);
      fake.#server.listen(port, '127.0.0.1', () => resolve());
    });
    return fake;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** Stops listening and drops open connections at once (an outage, not a drain). */
  async stop(): Promise<void> {
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  addAccessKey(id: string, secret: string, allowed?: readonly FakeAction[]): void {
    this.#principals.set(id, { secret, ...(allowed !== undefined && { allowed: new Set(allowed) }) });
  }

  /** Creates an Enabled symmetric key with one version; returns its KeyId. */
  createKey(alias?: string): string {
    const id = randomUUID();
    const key: FakeKey = { id, state: 'Enabled', versions: [], primary: '' };
    this.#keys.set(id, key);
    this.#newVersion(key);
    if (alias !== undefined) this.#aliases.set(alias, id);
    return id;
  }

  /** A rotation done in the service itself (console, automatic rotation). */
  rotate(keyId: string): string {
    return this.#newVersion(this.#key(keyId));
  }

  primaryVersion(keyId: string): string {
    return this.#key(keyId).primary;
  }

  setKeyState(keyId: string, state: string): void {
    this.#key(keyId).state = state;
  }

  inject(fault: InjectedFault): void {
    this.#faults.push({ fault, left: fault.times ?? Infinity });
  }

  clearFaults(): void {
    this.#faults = [];
  }

  #newVersion(key: FakeKey): string {
    // The service reports whole seconds; a later version always gets a later second.
    const last = key.versions.at(-1)?.createdAt.getTime() ?? 0;
    const now = Math.floor(Date.now() / 1000) * 1000;
    const version = {
      id: randomUUID(),
      createdAt: new Date(Math.max(now, last + 1000)),
      material: randomBytes(32),
    };
    key.versions.push(version);
    key.primary = version.id;
    return version.id;
  }

  #key(keyIdOrAlias: string): FakeKey {
    const key = this.#keys.get(this.#aliases.get(keyIdOrAlias) ?? keyIdOrAlias);
    if (key === undefined)
      throw new ServiceError(404, 'Forbidden.KeyNotFound', 'The specified Key is not found.');
    return key;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    try {
      const params = await readParams(request);
      const action = params.get('Action') ?? 'unknown';
      this.calls.set(action, (this.calls.get(action) ?? 0) + 1);
      this.#authenticate(request.method ?? 'POST', params);
      this.#injectedFault(action);
      const body = this.#dispatch(action, params);
      send(response, 200, { ...body, RequestId: requestId });
    } catch (error) {
      const failure =
        error instanceof ServiceError ? error : new ServiceError(500, 'InternalFailure', 'Internal Failure.');
      send(response, failure.status, {
        Code: failure.code,
        Message: failure.message,
        RequestId: requestId,
        HostId: 'kms.fake',
      });
    }
  }

  #authenticate(method: string, params: URLSearchParams): void {
    const id = params.get('AccessKeyId');
    const signature = params.get('Signature');
    if (id === null || signature === null || params.get('SignatureMethod') !== 'HMAC-SHA1')
      throw new ServiceError(
        400,
        'IncompleteSignature',
        'The request signature does not conform to standards.',
      );
    const principal = this.#principals.get(id);
    if (principal === undefined)
      throw new ServiceError(404, 'InvalidAccessKeyId.NotFound', 'The AccessKey ID provided does not exist.');
    const expected = rpcSignature(method, params, principal.secret);
    if (expected !== signature)
      throw new ServiceError(400, 'SignatureDoesNotMatch', 'The request signature does not match.');
    const action = params.get('Action') as FakeAction;
    if (principal.allowed !== undefined && !principal.allowed.has(action))
      throw new ServiceError(
        403,
        'Forbidden.RAM',
        'User not authorized to operate on the specified resource.',
      );
  }

  #injectedFault(action: string): void {
    const entry = this.#faults.find(
      candidate => candidate.left > 0 && (candidate.fault.action ?? action) === action,
    );
    if (entry === undefined) return;
    entry.left--;
    throw new ServiceError(entry.fault.status, entry.fault.code, 'injected fault');
  }

  #dispatch(action: string, params: URLSearchParams): Record<string, unknown> {
    const required = (name: string): string => {
      const value = params.get(name);
      if (value === null || value === '')
        throw new ServiceError(
          400,
          'MissingParameter',
          `The parameter "${name}" is needed but not provided.`,
        );
      return value;
    };
    switch (action) {
      case 'DescribeKey': {
        const key = this.#key(required('KeyId'));
        return {
          KeyMetadata: {
            KeyId: key.id,
            Arn: `acs:kms:${FAKE_REGION}:${ACCOUNT}:key/${key.id}`,
            KeyState: key.state,
            KeyUsage: 'ENCRYPT/DECRYPT',
            KeySpec: 'Aliyun_AES_256',
            CreationDate: isoSeconds(key.versions[0]?.createdAt ?? new Date()),
            PrimaryKeyVersion: key.primary,
          },
        };
      }
      case 'ListKeyVersions': {
        const key = this.#key(required('KeyId'));
        const page = Number(params.get('PageNumber') ?? '1');
        const size = Number(params.get('PageSize') ?? '10');
        if (!Number.isInteger(page) || page < 1 || !Number.isInteger(size) || size < 1 || size > 100)
          throw new ServiceError(400, 'InvalidParameter', 'The specified parameter is not valid.');
        const entries = key.versions.slice((page - 1) * size, page * size).map(version => ({
          KeyId: key.id,
          KeyVersionId: version.id,
          CreationDate: isoSeconds(version.createdAt),
        }));
        return {
          TotalCount: key.versions.length,
          PageNumber: page,
          PageSize: size,
          KeyVersions: { KeyVersion: entries },
        };
      }
      case 'CreateKeyVersion': {
        const key = this.#key(required('KeyId'));
        const id = this.#newVersion(key);
        const created = key.versions.find(version => version.id === id) as FakeVersion;
        return {
          KeyVersion: { KeyId: key.id, KeyVersionId: id, CreationDate: isoSeconds(created.createdAt) },
        };
      }
      case 'Encrypt': {
        const key = this.#key(required('KeyId'));
        this.#usable(key);
        const version = key.versions.find(candidate => candidate.id === key.primary) as FakeVersion;
        const iv = randomBytes(IV_LENGTH);
        const cipher = createCipheriv('aes-256-gcm', version.material, iv);
        cipher.setAAD(contextAad(params.get('EncryptionContext')));
        const sealed = Buffer.concat([cipher.update(required('Plaintext'), 'utf8'), cipher.final()]);
        const blob = Buffer.concat([Buffer.from(version.id, 'latin1'), iv, sealed, cipher.getAuthTag()]);
        return { CiphertextBlob: blob.toString('base64'), KeyId: key.id, KeyVersionId: version.id };
      }
      case 'Decrypt': {
        const blob = Buffer.from(required('CiphertextBlob'), 'base64');
        const invalid = new ServiceError(
          400,
          'InvalidParameter',
          'The specified parameter CiphertextBlob is not valid.',
        );
        if (blob.length < VERSION_ID_LENGTH + IV_LENGTH + TAG_LENGTH) throw invalid;
        const versionId = blob.subarray(0, VERSION_ID_LENGTH).toString('latin1');
        const key = [...this.#keys.values()].find(candidate =>
          candidate.versions.some(v => v.id === versionId),
        );
        if (key === undefined) throw invalid;
        this.#usable(key);
        const version = key.versions.find(candidate => candidate.id === versionId) as FakeVersion;
        const iv = blob.subarray(VERSION_ID_LENGTH, VERSION_ID_LENGTH + IV_LENGTH);
        const decipher = createDecipheriv('aes-256-gcm', version.material, iv);
        decipher.setAAD(contextAad(params.get('EncryptionContext')));
        decipher.setAuthTag(blob.subarray(blob.length - TAG_LENGTH));
        let plaintext: string;
        try {
          const sealed = blob.subarray(VERSION_ID_LENGTH + IV_LENGTH, blob.length - TAG_LENGTH);
          plaintext = Buffer.concat([decipher.update(sealed), decipher.final()]).toString('utf8');
        } catch {
          throw invalid;
        }
        return { Plaintext: plaintext, KeyId: key.id, KeyVersionId: version.id };
      }
      default:
        throw new ServiceError(
          400,
          'InvalidParameter',
          'The specified parameter "Action or Version" is not valid.',
        );
    }
  }

  #usable(key: FakeKey): void {
    if (key.state !== 'Enabled')
      throw new ServiceError(
        409,
        `Rejected.${key.state}`,
        `The request was rejected because the key state is ${key.state}.`,
      );
  }
}

/** Signature v1.0 of Alibaba Cloud's RPC APIs, computed from the received parameters. */
function rpcSignature(method: string, params: URLSearchParams, secret: string): string {
  const canonical = [...params.entries()]
    .filter(([name]) => name !== 'Signature')
    .map(([name, value]) => [percent(name), percent(value)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&');
  const stringToSign = `${method}&${percent('/')}&${percent(canonical)}`;
  return createHmac('sha1', `${secret}&`).update(stringToSign).digest('base64');
}

function percent(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    char => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** EncryptionContext as AAD: its entries in key order, so equal maps give equal bytes. */
function contextAad(context: string | null): Buffer {
  if (context === null || context === '') return Buffer.alloc(0);
  let parsed: unknown;
  try {
    parsed = JSON.parse(context);
  } catch {
    throw new ServiceError(
      400,
      'InvalidParameter',
      'The specified parameter EncryptionContext is not valid.',
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new ServiceError(
      400,
      'InvalidParameter',
      'The specified parameter EncryptionContext is not valid.',
    );
  const entries = Object.entries(parsed).sort(([a], [b]) => (a < b ? -1 : 1));
  return Buffer.from(JSON.stringify(entries), 'utf8');
}

async function readParams(request: IncomingMessage): Promise<URLSearchParams> {
  const params = new URL(request.url ?? '/', 'http://fake').searchParams;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new ServiceError(413, 'RequestTooLarge', 'request too large');
    chunks.push(chunk);
  }
  if (size > 0)
    for (const [name, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8')))
      params.append(name, value);
  return params;
}

function send(response: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json;charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
