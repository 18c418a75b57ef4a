// The Cloud KMS client as the broker uses it: one gRPC channel per backend, credentials from
// the configured file or Application Default Credentials, an optional private endpoint, and
// every request run under the shared call policy. The library's own retries are switched
// off so that ours, which respect the call's deadline, are the only ones.
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import type { ChannelCredentials } from '@grpc/grpc-js';
import type { GcpKmsBackendConfig } from './gcp-kms-schema.ts';
import { withSignal, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { FileReader } from '../../file-reader.ts';
import { createRemoteCaller, type Need } from '../remote-caller.ts';
import { loadCredentials } from './gcp-kms-credentials.ts';
import { GCP_KMS_SERVICE, gcpFailures } from './gcp-kms-errors.ts';

/** Per-attempt options for the library: no library retries, our timeout, our cancellation. */
export interface AttemptOptions {
  readonly timeout: number;
  readonly retry: null;
  readonly signal: AbortSignal;
}

export interface GcpKmsCaller {
  /**
   * Runs one request: bounded concurrency, retried when transient, within the deadline; a
   * failure leaves as the broker error that names what the request needed.
   */
  call<T>(
    deadline: Deadline,
    need: Need,
    request: (kms: KeyManagementServiceClient, options: AttemptOptions) => Promise<T>,
  ): Promise<T>;
  /**
   * Loads the credentials and produces a request header, as the first call would. A failure
   * is left as the library threw it: start-up tells what it means (credentialError).
   */
  checkCredentials(deadline: Deadline): Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_SERVICE = 'cloudkms.googleapis.com';

export async function createGcpKmsCaller(
  config: GcpKmsBackendConfig,
  readFile: FileReader,
): Promise<GcpKmsCaller> {
  // Loaded when a Cloud KMS backend opens: brokers without one never pay for google-gax.
  const { KeyManagementServiceClient } = await import('@google-cloud/kms');
  const endpoint = config.endpoint === undefined ? undefined : new URL(config.endpoint);
  const kms: KeyManagementServiceClient = new KeyManagementServiceClient({
    ...(config.credentialsFile !== undefined && {
      authClient: await loadCredentials(config.credentialsFile, config.name),
    }),
    ...(endpoint !== undefined && {
      apiEndpoint: endpoint.hostname,
      port: endpoint.port === '' ? 443 : Number(endpoint.port),
    }),
    ...(config.caFile !== undefined && {
      sslCreds: await privateCaCredentials(readCa(config.caFile, config.name, readFile), () =>
        kms.auth.getClient(),
      ),
    }),
  });
  const caller = createRemoteCaller({
    backend: config.name,
    service: GCP_KMS_SERVICE,
    maxConcurrency: config.maxConcurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    failures: gcpFailures,
  });
  return {
    call: (deadline, need, request) =>
      caller.call(deadline, need, (attemptSignal, timeout) =>
        request(kms, { timeout, retry: null, signal: attemptSignal }),
      ),
    async checkCredentials(deadline) {
      const client = await withSignal(kms.auth.getClient(), deadline.signal);
      await withSignal(
        client.getRequestHeaders(`https://${endpoint?.hostname ?? DEFAULT_SERVICE}/`),
        deadline.signal,
      );
    },
    close: () => kms.close(),
  };
}

/** What the channel credentials need of the library's auth client. */
interface HeaderSource {
  getRequestHeaders(url?: string): Promise<Headers | Record<string, string>>;
}

function readCa(caFile: string, backend: string, readFile: FileReader): Buffer {
  try {
    return readFile(caFile);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'UNREADABLE';
    throw new BrokerError('CONFIG_INVALID', `backend ${backend}: cannot read caFile ${caFile} (${code})`);
  }
}

/**
 * TLS that trusts only the configured CA (a private endpoint's), in this backend's channel
 * alone, carrying the OAuth token the library would attach: google-gax sends no call
 * credentials of its own when it is given channel credentials.
 */
async function privateCaCredentials(
  ca: Buffer,
  authClient: () => Promise<HeaderSource>,
): Promise<ChannelCredentials> {
  const { credentials } = await import('@grpc/grpc-js');
  return credentials.combineChannelCredentials(
    credentials.createSsl(ca),
    credentials.createFromGoogleCredential({
      async getRequestHeaders(url?: string) {
        const headers = await (await authClient()).getRequestHeaders(url);
        // google-auth-library answers with a Headers object; grpc-js reads a plain one.
        return headers instanceof Headers ? Object.fromEntries(headers) : headers;
      },
    }),
  );
}
