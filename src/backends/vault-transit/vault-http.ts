// A typed layer over node-vault: keep-alive connections, TLS from files, a bound on
// concurrent requests, bounded retries of transient failures inside the caller's deadline,
// and failures classified by HTTP status or socket error, never by Vault's message text.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import {
  BulkheadRejectedError,
  ExponentialBackoff,
  TaskCancelledError,
  bulkhead,
  handleWhen,
  retry,
  wrap,
} from 'cockatiel';
import nodeVault from 'node-vault';
import type { VaultTransitBackendConfig } from '../../config/schema.ts';
import { remainingMs } from '../../broker/deadline.ts';
import { BrokerError } from '../../errors.ts';

export type VaultFailureKind =
  /** Connection refused or reset, timeouts, 5xx, sealed, throttled: worth a retry. */
  | 'unavailable'
  | 'forbidden'
  | 'not-found'
  /** 400: Vault rejected the input (on decrypt: a ciphertext it cannot open). */
  | 'rejected'
  | 'other';

/** A failed Vault request. `cause` is a safe tag (HTTP_503, ECONNREFUSED), never Vault's text. */
export class VaultRequestError extends Error {
  readonly kind: VaultFailureKind;
  readonly status: number | undefined;
  override readonly cause: string;

  constructor(kind: VaultFailureKind, status: number | undefined, cause: string) {
    super(`vault request failed: ${cause}`);
    this.name = 'VaultRequestError';
    this.kind = kind;
    this.status = status;
    this.cause = cause;
  }
}

const MAX_QUEUED_REQUESTS = 4096;
const transientSocketErrors = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

export interface VaultHttp {
  read<T>(path: string, signal: AbortSignal): Promise<T>;
  write<T>(path: string, body: object, signal: AbortSignal): Promise<T>;
  setToken(token: string): void;
  close(): void;
}

export function createVaultHttp(config: VaultTransitBackendConfig): VaultHttp {
  const tls = config.tls;
  // Our own agents: keep-alive connection reuse, and TLS material read once from files.
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: config.maxConcurrency });
  const httpsAgent = new https.Agent({
    keepAlive: true,
    maxSockets: config.maxConcurrency,
    ...(tls?.caFile !== undefined && { ca: readFileSync(tls.caFile) }),
    ...(tls?.serverName !== undefined && { servername: tls.serverName }),
    ...(tls?.certFile !== undefined && { cert: readFileSync(tls.certFile) }),
    ...(tls?.keyFile !== undefined && { key: readFileSync(tls.keyFile) }),
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

  const limiter = bulkhead(config.maxConcurrency, MAX_QUEUED_REQUESTS);
  // maxAttempts counts retries: at most three attempts in all, inside the call's deadline.
  const retries = retry(
    handleWhen(error => error instanceof VaultRequestError && error.kind === 'unavailable'),
    { maxAttempts: 2, backoff: new ExponentialBackoff({ initialDelay: 25, maxDelay: 400 }) },
  );
  const policy = wrap(retries, limiter);

  const send = async <T>(signal: AbortSignal, call: (options: object) => Promise<unknown>): Promise<T> => {
    try {
      return (await policy.execute(async () => {
        // Each attempt gets what is left of the call's budget, capped by the request timeout.
        const timeout = Math.max(1, Math.min(config.requestTimeoutMs, remainingMs(signal)));
        try {
          return await call({ httpAgent, httpsAgent, timeout });
        } catch (error) {
          throw classify(error);
        }
      }, signal)) as T;
    } catch (error) {
      if (error instanceof TaskCancelledError || signal.aborted) {
        throw new BrokerError('DEADLINE_EXCEEDED', 'the Vault request did not complete within its deadline');
      }
      if (error instanceof BulkheadRejectedError) {
        throw new VaultRequestError('unavailable', undefined, 'QUEUE_FULL');
      }
      throw error;
    }
  };

  return {
    read: (path, signal) => send(signal, options => client.read(path, options)),
    write: (path, body, signal) => send(signal, options => client.write(path, body, options)),
    setToken(token) {
      client.token = token;
    },
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

function classify(error: unknown): VaultRequestError {
  if (error instanceof VaultRequestError) return error;
  const status = (error as { response?: { statusCode?: number } }).response?.statusCode;
  if (typeof status === 'number') {
    const sealed = status === 503 && /sealed/i.test((error as Error).message);
    if (sealed) return new VaultRequestError('unavailable', status, 'VAULT_SEALED');
    if (status === 429 || status >= 500)
      return new VaultRequestError('unavailable', status, `HTTP_${status}`);
    if (status === 403) return new VaultRequestError('forbidden', status, 'HTTP_403');
    if (status === 404) return new VaultRequestError('not-found', status, 'HTTP_404');
    if (status === 400) return new VaultRequestError('rejected', status, 'HTTP_400');
    return new VaultRequestError('other', status, `HTTP_${status}`);
  }
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new VaultRequestError('unavailable', undefined, code);
  if (typeof code === 'string' && /^[A-Z_]+$/.test(code))
    return new VaultRequestError('other', undefined, code);
  return new VaultRequestError('other', undefined, 'VAULT_CLIENT_ERROR');
}
