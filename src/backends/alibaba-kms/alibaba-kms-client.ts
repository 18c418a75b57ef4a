// Typed Alibaba Cloud KMS (API 2016-01-20) actions over the RPC protocol of
// @alicloud/openapi-client, whose errors carry the HTTP status beside the service's code
// (the rpc-client that @alicloud/kms20160120 1.2.0 is built on keeps the status only in
// its message text). Every request goes through the backend's remote caller: a bound on
// concurrent requests and our retries inside the deadline; the SDK's own retries are off.
// Failures leave classified, for the backend to name in the broker's terms.
import openapi from '@alicloud/openapi-client';
import teaUtil from '@alicloud/tea-util';
import type { AlibabaKmsBackendConfig } from './alibaba-kms-schema.ts';
import { BackendCallError, transientSocketErrors } from '../call-policy.ts';
import type { RemoteCaller } from '../remote-caller.ts';
import type { AlibabaCredential } from './alibaba-kms-credentials.ts';
import type { Deadline } from '../../deadline.ts';

const API_VERSION = '2016-01-20';

/** The fields of DescribeKey's KeyMetadata the backend uses (names as on the wire). */
export interface KeyMetadata {
  readonly KeyId?: string;
  readonly Arn?: string;
  readonly KeyState?: string;
  readonly KeyUsage?: string;
  readonly PrimaryKeyVersion?: string;
}

export interface KeyVersionEntry {
  readonly KeyId?: string;
  readonly KeyVersionId?: string;
  readonly CreationDate?: string;
}

export interface CipherResult {
  readonly KeyId?: string;
  readonly KeyVersionId?: string;
  readonly CiphertextBlob?: string;
  readonly Plaintext?: string;
}

export interface AlibabaKmsClient {
  describeKey(keyId: string, deadline: Deadline): Promise<KeyMetadata>;
  /** Every version of the key, all pages. */
  listKeyVersions(keyId: string, deadline: Deadline): Promise<KeyVersionEntry[]>;
  createKeyVersion(keyId: string, deadline: Deadline): Promise<KeyVersionEntry>;
  encrypt(
    keyId: string,
    plaintext: string,
    context: Record<string, string>,
    deadline: Deadline,
  ): Promise<CipherResult>;
  decrypt(ciphertextBlob: string, context: Record<string, string>, deadline: Deadline): Promise<CipherResult>;
  /** Resolves the credentials once, so that a missing or broken source fails at start. */
  checkCredentials(): Promise<void>;
}

/** ListKeyVersions' largest page; a key rarely has more versions than one page holds. */
const PAGE_SIZE = 100;
/** Bounds the paging loop (100 pages of 100 versions). */
const MAX_PAGES = 100;

export function createAlibabaKmsClient(
  config: AlibabaKmsBackendConfig,
  credential: AlibabaCredential,
  caller: Pick<RemoteCaller, 'run'>,
): AlibabaKmsClient {
  const endpoint = new URL(config.endpoint ?? `https://kms.${config.regionId}.aliyuncs.com`);
  const client = new openapi.default(
    new openapi.Config({
      credential,
      regionId: config.regionId,
      endpoint: endpoint.host,
      protocol: endpoint.protocol.replace(':', ''),
      // The RPC signature (HMAC-SHA1 over the canonical query) of the 2016-01-20 API.
      signatureAlgorithm: 'v2',
    }),
  );
  async function call<T>(action: string, query: Record<string, string>, deadline: Deadline): Promise<T> {
    return caller.run(deadline, async (attemptSignal, timeoutMs) => {
      const params = new openapi.Params({
        action,
        version: API_VERSION,
        protocol: 'HTTPS',
        pathname: '/',
        method: 'POST',
        authType: 'AK',
        style: 'RPC',
        reqBodyType: 'formData',
        bodyType: 'json',
      });
      const runtime = new teaUtil.RuntimeOptions({
        autoretry: false,
        maxAttempts: 1,
        readTimeout: timeoutMs,
        connectTimeout: timeoutMs,
      });
      const response = (await untilAborted(
        client.callApi(params, new openapi.OpenApiRequest({ query }), runtime),
        attemptSignal,
      )) as { body?: unknown };
      if (typeof response.body !== 'object' || response.body === null)
        throw new BackendCallError('unavailable', 'BAD_RESPONSE');
      return response.body as T;
    });
  }

  return {
    async describeKey(keyId, deadline) {
      const body = await call<{ KeyMetadata?: KeyMetadata }>('DescribeKey', { KeyId: keyId }, deadline);
      return body.KeyMetadata ?? {};
    },
    async listKeyVersions(keyId, deadline) {
      const versions: KeyVersionEntry[] = [];
      for (let page = 1; page <= MAX_PAGES; page++) {
        const body = await call<{ TotalCount?: number; KeyVersions?: { KeyVersion?: KeyVersionEntry[] } }>(
          'ListKeyVersions',
          { KeyId: keyId, PageNumber: String(page), PageSize: String(PAGE_SIZE) },
          deadline,
        );
        const entries = body.KeyVersions?.KeyVersion ?? [];
        versions.push(...entries);
        const total = body.TotalCount;
        if (entries.length < PAGE_SIZE || (total !== undefined && versions.length >= total)) break;
      }
      return versions;
    },
    async createKeyVersion(keyId, deadline) {
      const body = await call<{ KeyVersion?: KeyVersionEntry }>(
        'CreateKeyVersion',
        { KeyId: keyId },
        deadline,
      );
      return body.KeyVersion ?? {};
    },
    encrypt(keyId, plaintext, context, deadline) {
      return call<CipherResult>(
        'Encrypt',
        { KeyId: keyId, Plaintext: plaintext, EncryptionContext: JSON.stringify(context) },
        deadline,
      );
    },
    decrypt(ciphertextBlob, context, deadline) {
      return call<CipherResult>(
        'Decrypt',
        { CiphertextBlob: ciphertextBlob, EncryptionContext: JSON.stringify(context) },
        deadline,
      );
    },
    async checkCredentials() {
      try {
        await credential.getCredential();
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        // A credential source behind the network (RAM role, OIDC exchange) may just be down.
        if (typeof code === 'string' && transientSocketErrors.has(code))
          throw new BackendCallError('unavailable', code);
        throw new BackendCallError('auth', 'NO_CREDENTIALS');
      }
    },
  };
}

/**
 * The SDK takes no AbortSignal: its own timeouts end the request, and this race lets an
 * attempt give up at once when its deadline fires first. It rejects with the deadline's
 * reason, so that the call policy tells an attempt's timeout (retried) from the call's.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      value => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
