// The way `kms-broker migrate` reaches the Kubernetes API. @kubernetes/client-node finds the
// kubeconfig and turns it into TLS options and credentials (client certificates, tokens, exec
// plugins); the calls themselves are plain JSON requests through one narrow port, so the
// runners and their tests see `request(method, path, body)` and nothing else.
import { existsSync } from 'node:fs';
import { http } from '../node-http.ts';
import https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BrokerError } from '../errors.ts';

export interface KubeResponse {
  readonly status: number;
  /** Parsed JSON when the answer is JSON, else undefined. */
  readonly body: unknown;
  readonly text: string;
}

/** The narrow port every part of migrate uses. */
export interface KubeApi {
  /** The kubeconfig's server URL: what the state file is keyed by. */
  readonly server: string;
  /** One call; `server` overrides the kubeconfig's (another apiserver of the same cluster). */
  request(method: string, path: string, body?: unknown, server?: string): Promise<KubeResponse>;
}

const CONTROL_PLANE_KUBECONFIG = '/etc/kubernetes/admin.conf';
const CALL_TIMEOUT_MS = 30_000;

/**
 * --kubeconfig, else $KUBECONFIG (its first existing entry), else the control-plane node's
 * admin.conf, else ~/.kube/config. Says which places it tried when none exists.
 */
export function findKubeconfig(flag: string | undefined, env = process.env): string {
  if (flag !== undefined) {
    if (!existsSync(flag))
      throw new BrokerError('KUBECONFIG_INVALID', `--kubeconfig ${flag}: no such file; correct the path`);
    return flag;
  }
  const tried: string[] = [];
  const fromEnv = (env.KUBECONFIG ?? '').split(':').filter(entry => entry !== '');
  for (const candidate of [...fromEnv, CONTROL_PLANE_KUBECONFIG, join(homedir(), '.kube', 'config')]) {
    if (existsSync(candidate)) return candidate;
    tried.push(candidate);
  }
  throw new BrokerError(
    'KUBECONFIG_INVALID',
    `no kubeconfig found (tried ${tried.join(', ')}); pass --kubeconfig <file> or set KUBECONFIG`,
  );
}

/** A KubeApi on the kubeconfig at `path` (its current context). */
export async function connectKube(path: string): Promise<KubeApi> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const config = new KubeConfig();
  try {
    config.loadFromFile(path);
  } catch (error) {
    throw new BrokerError(
      'KUBECONFIG_INVALID',
      `kubeconfig ${path} cannot be read (${error instanceof Error ? error.message : String(error)}); fix or replace it`,
    );
  }
  const cluster = config.getCurrentCluster();
  if (cluster === null || cluster.server === '')
    throw new BrokerError(
      'KUBECONFIG_INVALID',
      `kubeconfig ${path}: its current context (${config.getCurrentContext() || 'none'}) names no cluster with a server; set current-context`,
    );
  const server = cluster.server.replace(/\/+$/, '');
  return {
    server,
    async request(method, path, body, target = server) {
      const options: https.RequestOptions = {};
      try {
        await config.applyToHTTPSOptions(options);
      } catch (error) {
        throw new BrokerError(
          'KUBECONFIG_INVALID',
          `kubeconfig ${path}: its credentials cannot be used (${error instanceof Error ? error.message : String(error)})`,
        );
      }
      return send(target, method, path, body, options);
    },
  };
}

function send(
  server: string,
  method: string,
  path: string,
  body: unknown,
  tlsOptions: https.RequestOptions,
): Promise<KubeResponse> {
  // Appended, not resolved: a server URL may carry a path prefix (an API proxy).
  const url = new URL(`${server}${path}`);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> = {
    ...(tlsOptions.headers as Record<string, string> | undefined),
    accept: 'application/json, */*',
    ...(payload !== undefined && {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload),
    }),
  };
  const options: https.RequestOptions = { ...tlsOptions, method, headers, timeout: CALL_TIMEOUT_MS };
  const call = url.protocol === 'http:' ? http.request : https.request;
  return new Promise((resolve, reject) => {
    const req = call(url, options, res => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        if (/json/.test(res.headers['content-type'] ?? '')) {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS / 1000} s`)));
    req.on('error', (error: NodeJS.ErrnoException) =>
      reject(
        new BrokerError(
          'KUBE_API_ERROR',
          `${method} ${url.origin}${url.pathname}: cannot reach the apiserver (${error.code ?? error.message}); check the kubeconfig's server and that the apiserver runs`,
          error.code,
        ),
      ),
    );
    req.end(payload);
  });
}

/** A KUBE_API_ERROR naming the call, the status and the apiserver's own message. */
export function apiError(method: string, path: string, response: KubeResponse, hint = ''): BrokerError {
  const message =
    typeof response.body === 'object' && response.body !== null && 'message' in response.body
      ? String(response.body.message)
      : response.text.slice(0, 200);
  return new BrokerError(
    'KUBE_API_ERROR',
    `${method} ${path}: HTTP ${response.status}: ${message}${hint === '' ? '' : `; ${hint}`}`,
  );
}

/** A call that must answer 2xx; anything else is a KUBE_API_ERROR. */
export async function must(
  api: KubeApi,
  method: string,
  path: string,
  body?: unknown,
): Promise<KubeResponse> {
  const response = await api.request(method, path, body);
  if (response.status < 200 || response.status > 299) {
    const hint =
      response.status === 401 || response.status === 403
        ? 'the kubeconfig user needs rights for this (e.g. cluster-admin)'
        : '';
    throw apiError(method, path, response, hint);
  }
  return response;
}
