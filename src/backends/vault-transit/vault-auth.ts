// The Vault token's life: log in with the configured method, renew the token before it
// expires, and log in again when renewal is no longer possible or Vault answers 403. The
// token itself only ever lives in the HTTP layer's header; it is never logged or returned.
import type { SecretReader } from '../../secrets.ts';
import type { VaultAuthConfig, VaultTransitBackendConfig } from './vault-transit-schema.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { BackendCallError } from '../call-policy.ts';
import { vaultService, type VaultHttp } from './vault-http.ts';

interface AuthResponse {
  auth?: { client_token?: string; lease_duration?: number; renewable?: boolean };
}
interface LookupResponse {
  data?: { ttl?: number; renewable?: boolean; expire_time?: string | null };
}

/** What a request needs from the token's policy, named in a permission error. */
export interface Need {
  readonly capability: 'read' | 'update' | 'create';
  readonly path: string;
}

const LOGIN_TIMEOUT_MS = 10000;
/**
 * Renew when this fraction of the lease has passed: half the lease is left for a renewal
 * that a busy control plane delays (timers fire late under load) or that fails and is retried.
 */
const RENEW_AT = 1 / 2;
/** After a failed renewal or login in the background, try again this soon (sooner near expiry). */
const RETRY_AFTER_MS = 5000;
/** Floor for the renewal timer, so a token about to expire cannot spin it. */
const MIN_RENEW_DELAY_MS = 200;
/**
 * A renewal that grants less than this share of the login's lease means the token's max
 * TTL is near (Vault caps renewals silently): log in afresh rather than renew.
 */
const MIN_RENEWED_SHARE = 1 - RENEW_AT;

export class VaultAuth {
  readonly #http: VaultHttp;
  readonly #auth: VaultAuthConfig;
  readonly #backend: string;
  /** "Vault at <address>", for errors that must say which server failed. */
  readonly #service: string;
  readonly #readSecret: SecretReader;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;
  #relogin: Promise<void> | undefined;
  #closed = false;
  /** The lease the last login granted, to notice renewals capped by the max TTL. */
  #loginLeaseSeconds = 0;
  /** When the current token expires (epoch ms), to retry a failed renewal in time. */
  #expiresAt = 0;

  constructor(
    http: VaultHttp,
    config: VaultTransitBackendConfig,
    deps: { readSecret: SecretReader; logger: Logger },
  ) {
    this.#http = http;
    this.#auth = config.auth;
    this.#backend = config.name;
    this.#service = vaultService(config.address);
    this.#readSecret = deps.readSecret;
    this.#logger = deps.logger;
  }

  /** Logs in and schedules renewal. A refused login is an error that names the method. */
  async login(): Promise<void> {
    const deadline = startDeadline(LOGIN_TIMEOUT_MS);
    let lease: { seconds: number; renewable: boolean };
    try {
      lease =
        this.#auth.method === 'token'
          ? await this.#useStaticToken(deadline)
          : await this.#loginWith(deadline);
    } catch (error) {
      throw this.#loginError(error);
    }
    this.#loginLeaseSeconds = lease.seconds;
    this.#schedule(lease);
  }

  /**
   * Runs a request; when Vault answers 403 (token expired or revoked), logs in again once
   * and retries. A second refusal is a policy problem and says which capability is missing.
   */
  async call<T>(need: Need, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      if (!(error instanceof BackendCallError) || error.kind !== 'permission') throw error;
    }
    await this.relogin('permission denied');
    try {
      return await request();
    } catch (error) {
      if (error instanceof BackendCallError && error.kind === 'permission') {
        throw new BrokerError(
          'BACKEND_PERMISSION_DENIED',
          `backend ${this.#backend}: Vault denied the request; the token's policy needs "${need.capability}" on path "${need.path}"`,
          'HTTP_403',
        );
      }
      throw error;
    }
  }

  /** One login at a time, however many calls saw the 403. */
  relogin(reason: string): Promise<void> {
    this.#relogin ??= (async () => {
      this.#logger.warn({ reason, method: this.#auth.method }, 'logging in to Vault again');
      try {
        await this.login();
      } finally {
        this.#relogin = undefined;
      }
    })();
    return this.#relogin;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  async #useStaticToken(deadline: Deadline): Promise<{ seconds: number; renewable: boolean }> {
    const token = this.#readSecret(
      { file: this.#auth.tokenFile, env: this.#auth.tokenEnv, envKey: 'auth.tokenEnv' },
      `backend ${this.#backend} Vault token`,
    );
    this.#http.setToken(token);
    const lookup = await this.#http.read<LookupResponse>('auth/token/lookup-self', deadline);
    // `ttl` is whole seconds and reads 0 in a token's last second; `expire_time` is exact,
    // and null only for a token that never expires.
    const expires = lookup.data?.expire_time;
    const seconds =
      typeof expires === 'string' ? Math.max(0.001, (Date.parse(expires) - Date.now()) / 1000) : 0;
    return {
      seconds: Number.isFinite(seconds) ? seconds : (lookup.data?.ttl ?? 0),
      renewable: lookup.data?.renewable === true,
    };
  }

  async #loginWith(deadline: Deadline): Promise<{ seconds: number; renewable: boolean }> {
    const auth = this.#auth;
    const mount = auth.mount ?? auth.method;
    let body: Record<string, string>;
    switch (auth.method) {
      case 'approle':
        body = {
          role_id: auth.roleId ?? '',
          secret_id: this.#readSecret(
            { file: auth.secretIdFile },
            `backend ${this.#backend} AppRole secret_id`,
          ),
        };
        break;
      case 'jwt':
        // Read at every login: projected service-account tokens are rotated on disk.
        body = {
          role: auth.role ?? '',
          jwt: this.#readSecret({ file: auth.jwtFile }, `backend ${this.#backend} JWT`),
        };
        break;
      default:
        body = auth.role === undefined ? {} : { name: auth.role };
    }
    // A login must not carry an old (possibly revoked) token.
    this.#http.setToken('');
    const response = await this.#http.write<AuthResponse>(`auth/${mount}/login`, body, deadline);
    const token = response.auth?.client_token;
    if (token === undefined || token === '') throw new BackendCallError('other', 'NO_TOKEN_IN_LOGIN');
    this.#http.setToken(token);
    return { seconds: response.auth?.lease_duration ?? 0, renewable: response.auth?.renewable === true };
  }

  #schedule(lease: { seconds: number; renewable: boolean }): void {
    clearTimeout(this.#timer);
    if (this.#closed || lease.seconds <= 0) return; // a token without TTL never expires
    const canRelogin = this.#auth.method !== 'token';
    if (!lease.renewable && !canRelogin) {
      this.#logger.warn({ ttlSeconds: lease.seconds }, 'the Vault token is not renewable and will expire');
      return;
    }
    this.#expiresAt = Date.now() + lease.seconds * 1000;
    const delayMs = Math.max(MIN_RENEW_DELAY_MS, lease.seconds * 1000 * RENEW_AT);
    this.#timer = setTimeout(() => void this.#refresh(lease.renewable), delayMs).unref();
  }

  async #refresh(renewable: boolean): Promise<void> {
    try {
      if (renewable) {
        const renewed = await this.#http.write<AuthResponse>(
          'auth/token/renew-self',
          {},
          startDeadline(LOGIN_TIMEOUT_MS),
        );
        const seconds = renewed.auth?.lease_duration ?? 0;
        if (seconds >= this.#loginLeaseSeconds * MIN_RENEWED_SHARE) {
          this.#schedule({ seconds, renewable: renewed.auth?.renewable === true });
          return;
        }
      }
      await this.relogin('token lease ending');
    } catch (error) {
      this.#logger.warn(
        { cause: error instanceof BackendCallError ? error.cause : (error as Error).name },
        'Vault token renewal failed; retrying',
      );
      // The same kind of refresh again (a renewable token is renewed, not swapped), and soon
      // enough that several tries fit before the token expires.
      const retryMs = Math.max(
        MIN_RENEW_DELAY_MS,
        Math.min(RETRY_AFTER_MS, (this.#expiresAt - Date.now()) / 3),
      );
      if (!this.#closed) this.#timer = setTimeout(() => void this.#refresh(renewable), retryMs).unref();
    }
  }

  #loginError(error: unknown): BrokerError {
    if (error instanceof BrokerError) return error;
    if (error instanceof BackendCallError && (error.kind === 'permission' || error.kind === 'rejected')) {
      return new BrokerError(
        'BACKEND_AUTH_FAILED',
        `backend ${this.#backend}: Vault refused the ${this.#auth.method} login (${error.cause}); check the auth settings and the credentials they point at`,
        error.cause,
      );
    }
    const cause = error instanceof BackendCallError ? error.cause : 'VAULT_CLIENT_ERROR';
    return new BrokerError(
      'BACKEND_UNAVAILABLE',
      `backend ${this.#backend}: cannot log in to ${this.#service} (${cause})`,
      cause,
    );
  }
}
