// The AWS KMS client as the broker uses it: credentials from the SDK's standard chain or
// from the files the config names, keep-alive connections bounded by maxConcurrency, and
// the SDK's own retries off, so that every request runs under the shared call policy
// (bounded, jittered retries inside the call's deadline) and fails as a broker error.
import { http } from '../../node-http.ts';
import https from 'node:https';
import { KMSClient } from '@aws-sdk/client-kms';
import { fromIni } from '@aws-sdk/credential-provider-ini';
import type { AwsKmsBackendConfig } from './aws-kms-schema.ts';
import { BrokerError } from '../../errors.ts';
import type { Deadline } from '../../deadline.ts';
import { createRemoteCaller } from '../remote-caller.ts';
import { awsFailures } from './aws-kms-errors.ts';

export const AWS_KMS_SERVICE = 'AWS KMS';
/** The SDK's error when no source of credentials yielded any. */
const NO_CREDENTIALS = 'CredentialsProviderError';

export interface AwsKms {
  /**
   * Runs one KMS request under the call policy. `permission` names what the request needs
   * ("kms:Decrypt on <arn>"), for the error when AWS denies it.
   */
  call<T>(
    deadline: Deadline,
    permission: string,
    request: (client: KMSClient, abortSignal: AbortSignal) => Promise<T>,
  ): Promise<T>;
  close(): void;
}

export function createAwsKms(config: AwsKmsBackendConfig): AwsKms {
  const agentOptions = { keepAlive: true, maxSockets: config.maxConcurrency };
  const httpAgent = new http.Agent(agentOptions);
  const httpsAgent = new https.Agent(agentOptions);
  const client = new KMSClient({
    region: config.region,
    ...(config.endpoint !== undefined && { endpoint: config.endpoint }),
    // A named file is read by the SDK's own INI provider (profiles, role_arn, credential_process
    // all work as they do in the default chain); otherwise the default chain decides.
    ...(config.credentialsFile !== undefined
      ? { credentials: fromIni({ filepath: config.credentialsFile, profile: config.profile ?? 'default' }) }
      : config.profile !== undefined && { profile: config.profile }),
    // Our retries respect the call's deadline; the SDK's would not.
    maxAttempts: 1,
    requestHandler: { httpAgent, httpsAgent, connectionTimeout: config.requestTimeoutMs },
  });
  const caller = createRemoteCaller({
    backend: config.name,
    service: AWS_KMS_SERVICE,
    maxConcurrency: config.maxConcurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    failures: awsFailures,
  });
  // Nothing reached AWS: say where credentials were looked for, not that AWS refused them.
  const refine = (failure: { cause: string }) =>
    failure.cause === NO_CREDENTIALS
      ? new BrokerError(
          'BACKEND_AUTH_FAILED',
          `backend ${config.name}: no AWS credentials could be loaded from ${credentialSource(config)}`,
          NO_CREDENTIALS,
        )
      : undefined;

  return {
    call: (deadline, permission, request) =>
      caller.call(deadline, { permission, refine }, attemptSignal => request(client, attemptSignal)),
    close() {
      client.destroy();
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

function credentialSource(config: AwsKmsBackendConfig): string {
  const profile = config.profile ?? 'default';
  if (config.credentialsFile !== undefined) return `profile ${profile} of ${config.credentialsFile}`;
  if (config.profile !== undefined)
    return `profile ${profile} of the shared AWS config and credentials files`;
  return "the SDK's default chain (environment, shared files, web identity, container or instance metadata)";
}
