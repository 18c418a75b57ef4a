// The CLI's way to the admin API: where it listens and which token to send come from flags,
// then the environment, then the broker's config file (see config-path.ts).
import { readFileSync } from 'node:fs';
import type * as Http from 'node:http';
import https from 'node:https';
import { http } from '../node-http.ts';
import { readSecret } from '../secrets.ts';
import { BrokerError } from '../errors.ts';
import { readAdminSection, type AdminSection } from './admin-config.ts';
import { UnreachableError } from './unreachable.ts';
import { DEFAULT_CONFIG_PATH, missingConfigMessage, optionalConfigPath } from './config-path.ts';

export interface AdminTarget {
  /** `http(s)://host:port` or `unix:///path`. */
  readonly address: string;
  readonly token: string | undefined;
  readonly caFile?: string | undefined;
}

export interface AdminOptions {
  readonly admin?: string;
  readonly tokenFile?: string;
  readonly config?: string;
  readonly caFile?: string;
}

export interface AdminResponse {
  readonly status: number;
  readonly headers: Http.IncomingHttpHeaders;
  readonly body: unknown;
}

export { UnreachableError };

/**
 * Where the admin API is and which token to send. The config file (--config, KMS_BROKER_CONFIG,
 * or /etc/kms-broker/config.yaml where it exists) is read only for what the flags and the
 * environment leave open, and then only its `admin` section (see admin-config.ts).
 */
export async function resolveTarget(options: AdminOptions, role: 'viewer' | 'admin'): Promise<AdminTarget> {
  const configPath = optionalConfigPath(options.config);
  const givenAddress = options.admin ?? process.env.KMS_BROKER_ADMIN;
  const tokenFile = options.tokenFile ?? process.env.KMS_BROKER_TOKEN_FILE;
  let token: string | undefined;
  if (tokenFile !== undefined) token = readSecret({ file: tokenFile }, 'admin token');
  else if (process.env.KMS_BROKER_TOKEN !== undefined)
    token = readSecret({ env: 'KMS_BROKER_TOKEN' }, 'admin token');
  const config =
    configPath !== undefined && (givenAddress === undefined || token === undefined)
      ? await readAdminSection(configPath)
      : undefined;
  const address = givenAddress ?? configAddress(config);
  if (address === undefined) {
    const why =
      configPath === undefined ? missingConfigMessage(DEFAULT_CONFIG_PATH) : `${configPath} disables it`;
    throw new BrokerError(
      'INVALID_REQUEST',
      `say where the admin API listens: --admin, KMS_BROKER_ADMIN or the broker's config (${why})`,
    );
  }
  if (token === undefined && config !== undefined) {
    // From the config: an admin token for changes, any token for reads.
    const entry =
      config.tokens.find(candidate => candidate.role === 'admin') ??
      (role === 'viewer' ? config.tokens[0] : undefined);
    if (entry !== undefined) token = readSecret({ file: entry.file }, `admin token ${entry.name}`);
  }
  return { address, token, caFile: options.caFile };
}

function configAddress(config: AdminSection | undefined): string | undefined {
  if (config === undefined || !config.enabled) return undefined;
  if (config.listen.startsWith('unix://')) return config.listen;
  return `${config.tls ? 'https' : 'http'}://${config.listen}`;
}

export function request(
  target: AdminTarget,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<AdminResponse> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const common: Http.RequestOptions = {
    method,
    path,
    timeout: 35000,
    headers: {
      accept: 'application/json',
      ...(target.token !== undefined && { authorization: `Bearer ${target.token}` }),
      ...(payload !== undefined && {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
      }),
      ...headers,
    },
  };
  let send: (
    options: Http.RequestOptions,
    callback: (response: Http.IncomingMessage) => void,
  ) => Http.ClientRequest;
  let options: Http.RequestOptions;
  if (target.address.startsWith('unix://')) {
    options = { ...common, socketPath: target.address.slice('unix://'.length) };
    send = http.request;
  } else {
    const url = new URL(target.address);
    options = { ...common, hostname: url.hostname.replace(/^\[|\]$/g, ''), port: url.port };
    if (url.protocol === 'https:') {
      const ca = target.caFile === undefined ? undefined : readFileSync(target.caFile);
      options = { ...options, ...(ca !== undefined && { ca }) };
      send = https.request;
    } else send = http.request;
  }
  return new Promise((resolve, reject) => {
    const req = send(options, response => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const json = /json/.test(response.headers['content-type'] ?? '');
        let parsed: unknown = text;
        if (json) {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: parsed });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (error: NodeJS.ErrnoException) =>
      reject(
        new UnreachableError(
          `cannot reach the admin API at ${target.address} (${error.code ?? error.message})`,
        ),
      ),
    );
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
