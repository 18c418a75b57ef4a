// The two calls every Encrypt and Decrypt makes (POST transit/encrypt/<key> and
// transit/decrypt/<key>), sent straight through an undici Pool instead of node-vault's
// axios/follow-redirects stack, which cost half the broker's CPU at concurrency 64
// (docs/performance.md). Everything else (logins, renewal, key reads, rotation) stays on
// node-vault (vault-http.ts). Same token, namespace, TLS files and remote caller as there,
// and failures shaped as node-vault's are, so vaultFailures classifies both alike.
import { Pool } from 'undici';
import type { Deadline } from '../../deadline.ts';
import type { RemoteCaller } from '../remote-caller.ts';
import { COLD_PATH_CONNECTIONS, type VaultTls } from './vault-http.ts';
import type { VaultTransitBackendConfig } from './vault-transit-schema.ts';

/** Transit's answers are a few hundred bytes; anything far larger is not Vault talking. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

export interface TransitHotPath {
  /** POSTs a JSON body to `/v1/<path>` and resolves with Vault's parsed answer. */
  post<T>(path: string, body: object, deadline: Deadline): Promise<T>;
  close(): Promise<void>;
}

/** A non-2xx answer, shaped as node-vault's ApiResponseError: status and Vault's first error. */
export class VaultAnswerError extends Error {
  readonly statusCode: number;

  constructor(statusCode: number, firstError: string | undefined) {
    // Vault's text is read only to tell a sealed Vault or an unmounted path (vaultFailures);
    // the broker's own messages never carry it.
    super(firstError ?? `Status ${statusCode}`);
    this.name = 'VaultAnswerError';
    this.statusCode = statusCode;
  }
}

/**
 * undici's own codes for a connection that broke, as the socket codes node's http client
 * reports for the same event, so the shared table retries them as it always has.
 */
const socketCodes: Readonly<Record<string, string>> = {
  UND_ERR_SOCKET: 'ECONNRESET',
  UND_ERR_CLOSED: 'ECONNRESET',
  UND_ERR_CONNECT_TIMEOUT: 'ERR_SOCKET_CONNECTION_TIMEOUT',
};

export function createTransitHotPath(
  config: VaultTransitBackendConfig,
  caller: RemoteCaller,
  tls: VaultTls,
  /** The token vault-auth last set in the HTTP layer; empty while logged out. */
  token: () => string,
): TransitHotPath {
  // Keep-alive connections for the requests the remote caller lets through at once (its
  // bulkhead queues the rest), less the one node-vault keeps for the other calls, so that
  // Vault sees at most maxConcurrency connections from this backend (two when it is 1).
  const pool = new Pool(config.address, {
    connections: Math.max(1, config.maxConcurrency - COLD_PATH_CONNECTIONS),
    maxResponseSize: MAX_RESPONSE_BYTES,
    connect: { ...tls },
  });
  const namespace = config.namespace ?? '';

  const attempt = async (path: string, payload: string, signal: AbortSignal): Promise<unknown> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const current = token();
    if (current !== '') headers['x-vault-token'] = current;
    if (namespace !== '') headers['x-vault-namespace'] = namespace;
    // No redirect handling: undici's request never follows one, so a 3xx is a failure
    // (HTTP_3xx) and the token never travels to another host.
    const response = await pool
      .request({ method: 'POST', path: `/v1/${path}`, headers, body: payload, signal })
      .catch((error: unknown) => {
        throw asSocketError(error);
      });
    const text = await response.body.text().catch((error: unknown) => {
      throw asSocketError(error);
    });
    const answer = parseJson(text);
    if (response.statusCode === 200 || response.statusCode === 204) return answer;
    throw new VaultAnswerError(response.statusCode, firstError(answer));
  };

  return {
    post: <T>(path: string, body: object, deadline: Deadline) => {
      const payload = JSON.stringify(body);
      return caller.run(deadline, signal => attempt(path, payload, signal)) as Promise<T>;
    },
    close: () => pool.destroy(),
  };
}

function asSocketError(error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  const mapped = typeof code === 'string' ? socketCodes[code] : undefined;
  if (mapped === undefined) return error;
  return Object.assign(new Error(`connection to Vault lost (${code as string})`), { code: mapped });
}

/** Vault answers JSON; a body that is not (a proxy's error page) reads as no answer at all. */
function parseJson(text: string): unknown {
  if (text === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return {};
  }
}

function firstError(answer: unknown): string | undefined {
  const errors = (answer as { errors?: unknown } | null)?.errors;
  const first: unknown = Array.isArray(errors) ? errors[0] : undefined;
  return typeof first === 'string' ? first : undefined;
}
