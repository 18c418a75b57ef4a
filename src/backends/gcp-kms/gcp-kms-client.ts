// The Cloud KMS client as the broker uses it: one gRPC channel per backend, credentials from
// the configured file or Application Default Credentials, an optional private endpoint, and
// every request run under the shared call policy. The library's own retries are switched
// off so that ours, which respect the call's deadline, are the only ones.
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import type { GcpKmsBackendConfig } from '../../config/gcp-kms-schema.ts';
import { withSignal } from '../../broker/deadline.ts';
import { BrokerError } from '../../errors.ts';
import { createCallPolicy } from '../call-policy.ts';
import { loadCredentials } from './gcp-kms-credentials.ts';
import { classifyGcpError } from './gcp-kms-errors.ts';

/** Per-attempt options for the library: no library retries, our timeout, our cancellation. */
export interface AttemptOptions {
  readonly timeout: number;
  readonly retry: null;
  readonly signal: AbortSignal;
}

export interface GcpKmsCaller {
  /** Runs one request: bounded concurrency, retried when transient, within `signal`'s deadline. */
  run<T>(
    signal: AbortSignal,
    request: (kms: KeyManagementServiceClient, options: AttemptOptions) => Promise<T>,
  ): Promise<T>;
  /** Loads the credentials and produces a request header, as the first call would. */
  checkCredentials(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_SERVICE = 'cloudkms.googleapis.com';

export async function createGcpKmsCaller(config: GcpKmsBackendConfig): Promise<GcpKmsCaller> {
  // Loaded when a Cloud KMS backend opens: brokers without one never pay for google-gax.
  const { KeyManagementServiceClient } = await import('@google-cloud/kms');
  const endpoint = config.endpoint === undefined ? undefined : new URL(config.endpoint);
  const kms = new KeyManagementServiceClient({
    ...(config.credentialsFile !== undefined && {
      authClient: await loadCredentials(config.credentialsFile, config.name),
    }),
    ...(endpoint !== undefined && {
      apiEndpoint: endpoint.hostname,
      port: endpoint.port === '' ? 443 : Number(endpoint.port),
    }),
  });
  const policy = createCallPolicy({
    maxConcurrency: config.maxConcurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    classify: classifyGcpError,
  });
  return {
    run: (signal, request) =>
      policy.run(signal, (attemptSignal, timeout) =>
        request(kms, { timeout, retry: null, signal: attemptSignal }),
      ),
    async checkCredentials(signal) {
      try {
        const client = await withSignal(kms.auth.getClient(), signal);
        await withSignal(
          client.getRequestHeaders(`https://${endpoint?.hostname ?? DEFAULT_SERVICE}/`),
          signal,
        );
      } catch (error) {
        throw error instanceof BrokerError ? error : classifyGcpError(error);
      }
    },
    close: () => kms.close(),
  };
}
