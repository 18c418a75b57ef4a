// A typed layer over node-vault: keep-alive connections, TLS from files, a bound on
// concurrent requests, bounded retries of transient failures inside the caller's deadline,
// and failures classified by HTTP status or socket error, never by Vault's message text.
import http from 'node:http';
import https from 'node:https';
import nodeVault from 'node-vault';
import type { VaultTransitBackendConfig } from './vault-transit-schema.ts';
import { BackendCallError, createCallPolicy, transientSocketErrors } from '../call-policy.ts';
import type { Deadline } from '../../deadline.ts';
import type { FileReader } from '../../file-reader.ts';

export interface VaultHttp {
  read<T>(path: string, deadline: Deadline): Promise<T>;
  write<T>(path: string, body: object, deadline: Deadline): Promise<T>;
  setToken(token: string): void;
  close(): void;
}

export function createVaultHttp(config: VaultTransitBackendConfig, readFile: FileReader): VaultHttp {
  const tls = config.tls;
  // Our own agents: keep-alive connection reuse, and the TLS material of the config's files.
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: config.maxConcurrency });
  const httpsAgent = new https.Agent({
    keepAlive: true,
    maxSockets: config.maxConcurrency,
    ...(tls?.caFile !== undefined && { ca: readFile(tls.caFile) }),
    ...(tls?.serverName !== undefined && { servername: tls.serverName }),
    ...(tls?.certFile !== undefined && { cert: readFile(tls.certFile) }),
    ...(tls?.keyFile !== undefined && { key: readFile(tls.keyFile) }),
  });
  const client = nodeVault({
    endpoint: config.address,
    // node-vault's debug output includes request bodies, i.e. plaintext seeds: never on.
    debug: () => undefined,
  });
  // node-vault falls back to VAULT_TOKEN and VAULT_NAMESPACE from the environment; the
  // broker's configuration is the only source of both.
  client.token = '';
  (client as { namespace?: string }).namespace = config.namespace ?? '';

  const policy = createCallPolicy({
    maxConcurrency: config.maxConcurrency,
    requestTimeoutMs: config.requestTimeoutMs,
    classify,
  });
  const send = <T>(deadline: Deadline, call: (options: object) => Promise<unknown>): Promise<T> =>
    policy.run(deadline, (_attemptSignal, timeout) => call({ httpAgent, httpsAgent, timeout })) as Promise<T>;

  return {
    read: (path, deadline) => send(deadline, options => client.read(path, options)),
    write: (path, body, deadline) => send(deadline, options => client.write(path, body, options)),
    setToken(token) {
      client.token = token;
    },
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

function classify(error: unknown): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const status = (error as { response?: { statusCode?: number } }).response?.statusCode;
  if (typeof status === 'number') {
    const sealed = status === 503 && /sealed/i.test((error as Error).message);
    if (sealed) return new BackendCallError('unavailable', 'VAULT_SEALED');
    if (status === 429) return new BackendCallError('throttled', 'HTTP_429');
    if (status >= 500) return new BackendCallError('unavailable', `HTTP_${status}`);
    if (status === 403) return new BackendCallError('permission', 'HTTP_403');
    if (status === 404) return new BackendCallError('not-found', 'HTTP_404');
    if (status === 400) return new BackendCallError('rejected', 'HTTP_400');
    return new BackendCallError('other', `HTTP_${status}`);
  }
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new BackendCallError('unavailable', code);
  if (typeof code === 'string' && /^[A-Z_]+$/.test(code)) return new BackendCallError('other', code);
  return new BackendCallError('other', 'VAULT_CLIENT_ERROR');
}
