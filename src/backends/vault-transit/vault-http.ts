// A typed layer over node-vault: keep-alive connections, TLS from files, and every request
// run by the backend's remote caller (a bound on concurrent requests, bounded retries of
// transient failures inside the caller's deadline). Failures leave classified by HTTP status
// or socket error, never by Vault's message text, save the words that tell a sealed Vault and
// a path no engine is mounted at.
import { http } from '../../node-http.ts';
import https from 'node:https';
import nodeVault from 'node-vault';
import type { VaultTransitBackendConfig } from './vault-transit-schema.ts';
import type { Deadline } from '../../deadline.ts';
import type { FileReader } from '../../file-reader.ts';
import { BackendCallError } from '../call-policy.ts';
import { httpStatusOf, ownStatusFailure, type StatusMeanings } from '../http-status.ts';
import type { RemoteCaller, ServiceFailures } from '../remote-caller.ts';

/** The cause of a 404 for a path under no mount: the engine is not enabled there. */
export const NO_MOUNT = 'VAULT_NO_MOUNT';

/**
 * Vault as errors name it: with its address, so that an operator sees which server could not
 * be reached. Scheme, host and port only: credentials written into the address stay out.
 */
export function vaultService(address: string): string {
  const url = new URL(address);
  return `Vault at ${url.protocol}//${url.host}`;
}

/**
 * Connections node-vault keeps: it carries logins, renewals, key reads and rotations, a few
 * calls a minute, while encrypt and decrypt take the Transit hot path's pool. Together they
 * stay within `maxConcurrency` connections to Vault (see transit-hot-path.ts).
 */
export const COLD_PATH_CONNECTIONS = 1;

export interface VaultHttp {
  read<T>(path: string, deadline: Deadline): Promise<T>;
  write<T>(path: string, body: object, deadline: Deadline): Promise<T>;
  setToken(token: string): void;
  /** The token last set; the Transit hot path sends the same one. */
  token(): string;
  close(): void;
}

/** The TLS material of the config's files, as node's https and undici's connect both take it. */
export interface VaultTls {
  readonly ca?: Buffer;
  readonly servername?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** Reads the config's TLS files once, for both of the backend's HTTP clients. */
export function vaultTls(config: VaultTransitBackendConfig, readFile: FileReader): VaultTls {
  const tls = config.tls;
  return {
    ...(tls?.caFile !== undefined && { ca: readFile(tls.caFile) }),
    ...(tls?.serverName !== undefined && { servername: tls.serverName }),
    ...(tls?.certFile !== undefined && { cert: readFile(tls.certFile) }),
    ...(tls?.keyFile !== undefined && { key: readFile(tls.keyFile) }),
  };
}

export function createVaultHttp(
  config: VaultTransitBackendConfig,
  caller: RemoteCaller,
  tls: VaultTls,
): VaultHttp {
  // Our own agents: keep-alive connection reuse, and the TLS material of the config's files.
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: COLD_PATH_CONNECTIONS });
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: COLD_PATH_CONNECTIONS, ...tls });
  const client = nodeVault({
    endpoint: config.address,
    // node-vault's debug output includes request bodies, i.e. plaintext seeds: never on.
    debug: () => undefined,
  });
  // node-vault falls back to VAULT_TOKEN and VAULT_NAMESPACE from the environment; the
  // broker's configuration is the only source of both.
  client.token = '';
  (client as { namespace?: string }).namespace = config.namespace ?? '';

  const send = <T>(deadline: Deadline, call: (options: object) => Promise<unknown>): Promise<T> =>
    caller.run(deadline, (_attemptSignal, timeout) => call({ httpAgent, httpsAgent, timeout })) as Promise<T>;

  return {
    read: (path, deadline) => send(deadline, options => client.read(path, options)),
    write: (path, body, deadline) => send(deadline, options => client.write(path, body, options)),
    setToken(token) {
      client.token = token;
    },
    token: () => client.token,
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

/**
 * Statuses outside Vault's documented set (it answers 403, not 401, to a refused token):
 * Vault has always read them as 'other', not as the shared table does; kept so.
 */
const vaultStatuses: StatusMeanings = { 401: 'other', 408: 'other', 409: 'other' };

export const vaultFailures: ServiceFailures = {
  classify(error) {
    const status = httpStatusOf(error);
    // A sealed Vault answers 503 like any outage; the word tells operators what to do.
    if (status === 503 && /sealed/i.test((error as Error).message))
      return new BackendCallError('unavailable', 'VAULT_SEALED');
    // Vault answers 404 both for a missing key (no text) and for a path no engine is mounted
    // at ("no handler for route"); only the text tells a wrong `mount:` from a missing key.
    if (status === 404 && /no handler for route/i.test((error as Error).message))
      return new BackendCallError('not-found', NO_MOUNT);
    return ownStatusFailure(status, vaultStatuses);
  },
  unexplained: 'VAULT_CLIENT_ERROR',
  namesErrorCodes: true,
};
