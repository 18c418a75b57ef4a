// Credentials from the file the config names, built with the constructor of their own type
// (the library's generic loaders are deprecated for files from outside). Only the kinds a
// server uses are accepted: a service-account key, or an external account (workload identity
// federation) whose subject token comes from a file, a URL or AWS.
import { readFileSync } from 'node:fs';
import type { googleAuthLibrary } from 'google-gax';
import { BrokerError } from '../../errors.ts';

export type GcpAuthClient = googleAuthLibrary.JWT | googleAuthLibrary.BaseExternalAccountClient;

interface CredentialsJson {
  type?: unknown;
  client_email?: unknown;
  private_key?: unknown;
  private_key_id?: unknown;
  credential_source?: { environment_id?: unknown; executable?: unknown };
}

export async function loadCredentials(file: string, backend: string): Promise<GcpAuthClient> {
  let json: CredentialsJson;
  try {
    json = JSON.parse(readFileSync(file, 'utf8')) as CredentialsJson;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'NOT_JSON';
    throw new BrokerError(
      'SECRET_UNREADABLE',
      `backend ${backend}: cannot read credentialsFile ${file} (${code})`,
    );
  }
  const { googleAuthLibrary: auth } = await import('google-gax');
  if (
    json.type === 'service_account' &&
    typeof json.client_email === 'string' &&
    typeof json.private_key === 'string'
  ) {
    return new auth.JWT({
      email: json.client_email,
      key: json.private_key,
      ...(typeof json.private_key_id === 'string' && { keyId: json.private_key_id }),
    });
  }
  if (json.type === 'external_account' && json.credential_source?.executable === undefined) {
    const options = json as googleAuthLibrary.IdentityPoolClientOptions & googleAuthLibrary.AwsClientOptions;
    return json.credential_source?.environment_id === undefined
      ? new auth.IdentityPoolClient(options)
      : new auth.AwsClient(options);
  }
  throw new BrokerError(
    'CONFIG_INVALID',
    `backend ${backend}: credentialsFile ${file} is not a service_account key or an external_account (file, URL or AWS sourced) configuration`,
  );
}
