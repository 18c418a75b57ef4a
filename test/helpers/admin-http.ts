// A small HTTP client for the admin API on its unix socket or its TCP address: real requests
// over node:http, answers with the status, the headers and the body (parsed when it is JSON).
import assert from 'node:assert/strict';
import { request } from 'node:http';

export interface AdminResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Parsed for application/json and application/problem+json, the text otherwise. */
  readonly body: unknown;
  readonly text: string;
}

export interface AdminRequest {
  readonly method?: string;
  /** A bearer token for Authorization. */
  readonly token?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as is when a string; serialized as JSON (with its content type) otherwise. */
  readonly body?: unknown;
}

export interface AdminClient {
  request(path: string, options?: AdminRequest): Promise<AdminResponse>;
  get(path: string, token?: string): Promise<AdminResponse>;
  post(path: string, token?: string): Promise<AdminResponse>;
}

/** `where`: the admin unix socket's path, or the `http://host:port` the broker logged. */
export function adminClient(where: string, timeoutMs = 10000): AdminClient {
  const target = where.startsWith('http://')
    ? { host: new URL(where).hostname.replace(/^\[|\]$/g, ''), port: Number(new URL(where).port) }
    : { socketPath: where };
  const send = (path: string, options: AdminRequest = {}) =>
    new Promise<AdminResponse>((resolve, reject) => {
      const headers: Record<string, string> = { ...options.headers };
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
      let payload: string | undefined;
      if (typeof options.body === 'string') payload = options.body;
      else if (options.body !== undefined) {
        payload = JSON.stringify(options.body);
        headers['content-type'] ??= 'application/json';
      }
      if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
      const req = request(
        { ...target, path, method: options.method ?? 'GET', headers, timeout: timeoutMs },
        res => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const type = res.headers['content-type'] ?? '';
            const json = /^application\/(problem\+)?json\b/.test(type);
            try {
              resolve({
                status: res.statusCode ?? 0,
                headers: res.headers,
                body: json ? (JSON.parse(text) as unknown) : text,
                text,
              });
            } catch (error) {
              reject(new Error(`${path}: ${type} body does not parse: ${String(error)}`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  return {
    request: send,
    get: (path, token) => send(path, token === undefined ? {} : { token }),
    post: (path, token) => send(path, token === undefined ? { method: 'POST' } : { method: 'POST', token }),
  };
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
}

/** Asserts an RFC 9457 problem with the catalog's code, status and (optionally) detail. */
export function problem(response: AdminResponse, status: number, code: string, detail?: RegExp): Problem {
  assert.equal(
    response.status,
    status,
    `expected ${status} ${code}, got ${response.status}: ${response.text}`,
  );
  assert.match(String(response.headers['content-type']), /^application\/problem\+json\b/);
  const body = response.body as Problem;
  assert.equal(body.type, `urn:kms-broker:error:${code}`);
  assert.equal(body.code, code);
  assert.equal(body.status, status);
  assert.equal(typeof body.title, 'string');
  assert.ok(body.title.length > 0);
  assert.equal(typeof body.detail, 'string');
  if (detail !== undefined) assert.match(body.detail, detail);
  return body;
}
