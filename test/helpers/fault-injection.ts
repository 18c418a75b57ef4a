// Shared fixtures for the failover fault tests (test/integration/failover*.test.ts): a broker
// over a real SoftHSM token and a real raft-backed OpenBao, a fault switch for the HSM side, a
// log stream tests can wait on, envelope bookkeeping, and a seeded PRNG.
//
// Why a fault switch for the HSM: SoftHSM is a library inside the broker's own process, so it
// cannot be unplugged, stopped or sealed from outside the way OpenBao can. The switch wraps the
// real Pkcs11Backend (every call still goes to the real token while the switch is off) and,
// while it is on, fails wraps, unwraps, probes and listings as an unplugged HSM would reach the
// broker: BACKEND_UNAVAILABLE with the cause name INJECTED.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { TestContext } from 'node:test';
import { defer } from './test-scope.ts';
export { defer };
import { startApp, type RunningApp } from '../../src/app.ts';
import type { KekBackend } from '../../src/backends/kek.ts';
import { Pkcs11Backend } from '../../src/backends/pkcs11/pkcs11-backend.ts';
import { createBackend } from '../../src/backends/registry.ts';
import { WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import type { BrokerConfig } from '../../src/config/schema.ts';
import { readSecret } from '../../src/secrets.ts';
import { BrokerError } from '../../src/errors.ts';
import type { KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import type { AdminClient } from './admin-http.ts';
import { pkcs11Backend, vaultBackend, writeConfig, type TestConfig } from './config.ts';
import {
  BROKER_POLICY,
  createToken as createVaultToken,
  enableTransit,
  startFileServer,
  writePolicy,
  type SealableBaoServer,
} from './openbao.ts';
import type { SoftHsmToken } from './softhsm.ts';

// ---------------------------------------------------------------------------------------------
// Clean-ups in reverse order of registration

// ---------------------------------------------------------------------------------------------
// The HSM fault switch

export const INJECTED_CAUSE = 'INJECTED';

export interface FaultSwitch {
  /** Whether calls fail now. */
  readonly failing: boolean;
  /** Calls failed by the switch since it was made, by operation. */
  readonly injected: Readonly<Record<string, number>>;
  fail(): void;
  recover(): void;
}

export type FaultyBackend = KekBackend & { readonly faults: FaultSwitch };

/** Wraps a real backend; while failing, its calls reject before reaching the service. */
export function withFaultInjection(inner: KekBackend): FaultyBackend {
  let failing = false;
  const injected: Record<string, number> = {};
  const guarded = <T>(operation: string, call: () => Promise<T>): Promise<T> => {
    if (!failing) return call();
    injected[operation] = (injected[operation] ?? 0) + 1;
    return Promise.reject(
      new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${inner.name}: the HSM is unavailable (${INJECTED_CAUSE})`,
        INJECTED_CAUSE,
      ),
    );
  };
  return {
    name: inner.name,
    type: inner.type,
    mechanism: inner.mechanism,
    autoCreate: inner.autoCreate,
    autoCreateOption: inner.autoCreateOption,
    ...(inner.externalRotation !== undefined && { externalRotation: inner.externalRotation }),
    open: () => inner.open(),
    listVersions: signal => guarded('listVersions', () => inner.listVersions(signal)),
    createVersion: signal => guarded('createVersion', () => inner.createVersion(signal)),
    wrap: request => guarded('wrap', () => inner.wrap(request)),
    unwrap: request => guarded('unwrap', () => inner.unwrap(request)),
    probe: signal => guarded('probe', () => inner.probe(signal)),
    close: () => inner.close(),
    faults: {
      get failing() {
        return failing;
      },
      get injected() {
        return { ...injected };
      },
      fail() {
        failing = true;
      },
      recover() {
        failing = false;
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// A log that tests can wait on

export type LogEntry = Record<string, unknown> & { readonly msg?: string; readonly time?: string };

export interface WatchedLog {
  readonly stream: Writable;
  readonly records: readonly LogEntry[];
  /** The first record at index >= `from` that matches, as soon as it is written. */
  waitFor(predicate: (record: LogEntry) => boolean, timeoutMs?: number, from?: number): Promise<LogEntry>;
}

/** A pino destination that keeps parsed records and wakes waiters on every line. */
export function watchedLog(): WatchedLog {
  const records: LogEntry[] = [];
  const listeners = new Set<() => void>();
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of String(chunk).split('\n')) {
        if (line !== '') records.push(JSON.parse(line) as LogEntry);
      }
      for (const listener of listeners) listener();
      callback();
    },
  });
  const waitFor = (predicate: (record: LogEntry) => boolean, timeoutMs = 15000, from = 0) =>
    new Promise<LogEntry>((resolve, reject) => {
      let checked = from;
      const check = () => {
        for (; checked < records.length; checked++) {
          const record = records[checked];
          if (record !== undefined && predicate(record)) {
            finish();
            resolve(record);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no matching log record within ${timeoutMs} ms`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return { stream, records, waitFor };
}

export const logTime = (record: Readonly<Record<string, unknown>>): number =>
  Date.parse(String(record['time']));

// ---------------------------------------------------------------------------------------------
// OpenBao and the broker's config

export const TRANSIT_KEY = 'kek';
const POLICY = 'kms-broker';

/** A raft-backed OpenBao (sealable, killable) with Transit and the broker's least-privilege policy. */
export async function startTransitServer(t: TestContext): Promise<SealableBaoServer> {
  const server = await startFileServer();
  defer(t, () => server.stop());
  await enableTransit(server);
  await writePolicy(server, POLICY, BROKER_POLICY('transit', TRANSIT_KEY, { createIfMissing: true }));
  return server;
}

export interface FailoverOptions {
  readonly order?: readonly string[];
  readonly wrap?: 'all' | 'first';
  readonly hysteresisMs?: number;
  readonly probeIntervalMs?: number;
  readonly openCooldownMs?: number;
  readonly callMs?: number;
  readonly logLevel?: string;
  /** The HSM key label: a fresh one per test keeps brokers of one file off each other's keys. */
  readonly keyLabel: string;
}

/**
 * A config over both backends, as an operator writes it: the HSM PIN and a Vault token with
 * only the broker's policy (1 h, renewable) in files beside the config.
 */
export async function writeFailoverConfig(
  t: TestContext,
  hsmToken: SoftHsmToken,
  server: SealableBaoServer,
  options: FailoverOptions,
): Promise<TestConfig> {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-failover-'));
  defer(t, () => rmSync(dir, { recursive: true, force: true }));
  const vaultToken = await createVaultToken(server, {
    policies: [POLICY],
    ttl: '1h',
    renewable: true,
    noDefaultPolicy: true,
  });
  const tokenFile = join(dir, 'vault-token');
  writeFileSync(tokenFile, `${vaultToken}\n`, { mode: 0o600 });
  return writeConfig(
    hsmToken,
    {
      log: { level: options.logLevel ?? 'debug' },
      timeouts: { callMs: options.callMs ?? 2500 },
      health: {
        probeIntervalMs: options.probeIntervalMs ?? 200,
        openCooldownMs: options.openCooldownMs ?? 500,
      },
      backends: [
        pkcs11Backend(hsmToken, { keyLabel: options.keyLabel }),
        vaultBackend(server.address, { method: 'token', tokenFile }, { key: TRANSIT_KEY }),
      ],
      failover: {
        order: [...(options.order ?? ['hsm', 'vault'])],
        wrap: options.wrap ?? 'all',
        hysteresisMs: options.hysteresisMs ?? 1000,
      },
    },
    dir,
  );
}

// ---------------------------------------------------------------------------------------------
// An in-process broker with the HSM behind the fault switch

export interface FailoverApp {
  readonly app: RunningApp;
  readonly config: BrokerConfig;
  readonly hsm: FaultSwitch;
  readonly log: WatchedLog;
  readonly logger: Logger;
}

/**
 * startApp with real backends built here: the real Pkcs11Backend behind the fault switch, and
 * every other configured backend as the registry builds it. SOFTHSM2_CONF must be set in this
 * process's environment.
 */
export async function startFailoverApp(t: TestContext, configPath: string): Promise<FailoverApp> {
  const { config, readFile } = loadConfigFile(configPath);
  const log = watchedLog();
  const logger = createLogger(config.log.level, log.stream);
  const backends = new Map<string, KekBackend>();
  let hsm: FaultyBackend | undefined;
  for (const backend of config.backends) {
    if (backend.type === 'pkcs11') {
      hsm = withFaultInjection(new Pkcs11Backend(backend, { readSecret, logger }));
      backends.set(backend.name, hsm);
    } else {
      backends.set(backend.name, await createBackend(backend, { readSecret, readFile, logger }));
    }
  }
  if (hsm === undefined) throw new Error('the config has no pkcs11 backend to put behind the switch');
  const app = await startApp(config, { logger, backends, readFile });
  defer(t, () => app.shutdown());
  return { app, config, hsm: hsm.faults, log, logger };
}

// ---------------------------------------------------------------------------------------------
// Envelopes

export const VAULT_WRAP = `vault${WRAP_ANNOTATION_SUFFIX}`;
export const HSM_WRAP = `hsm${WRAP_ANNOTATION_SUFFIX}`;

/** What the broker returned for one seed. */
export interface Sealed {
  readonly seed: Buffer;
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly annotations: Readonly<Record<string, Buffer>>;
}

/**
 * The backends whose wraps an envelope carries: the ciphertext's first, then the annotations'.
 * Throws if an annotation is not a wrap of the backend its key names.
 */
export function wrapsOf(sealed: Sealed): string[] {
  const wraps = [decodeEnvelope(sealed.ciphertext).header.backend];
  for (const [key, value] of Object.entries(sealed.annotations)) {
    const backend = decodeEnvelope(value).header.backend;
    if (`${backend}${WRAP_ANNOTATION_SUFFIX}` !== key)
      throw new Error(`annotation ${key} carries a wrap of ${backend}`);
    wraps.push(backend);
  }
  return wraps;
}

export async function encryptOne(client: KmsV2Client): Promise<Sealed> {
  const seed = randomBytes(32);
  const response = await client.encrypt(seed);
  return { seed, ciphertext: response.ciphertext, keyId: response.key_id, annotations: response.annotations };
}

export async function encryptSome(client: KmsV2Client, count: number): Promise<Sealed[]> {
  return Promise.all(Array.from({ length: count }, () => encryptOne(client)));
}

export async function decryptOne(client: KmsV2Client, sealed: Sealed): Promise<Buffer> {
  const response = await client.decrypt({
    ciphertext: sealed.ciphertext,
    key_id: sealed.keyId,
    annotations: { ...sealed.annotations },
  });
  return response.plaintext;
}

/**
 * Each wrap on its own, as the only wrap of a Decrypt: proves that every wrap the envelope
 * carries opens by itself (an annotation is a complete envelope of its backend).
 */
export async function decryptEachWrap(client: KmsV2Client, sealed: Sealed): Promise<string[]> {
  const opened: string[] = [];
  for (const wrap of [sealed.ciphertext, ...Object.values(sealed.annotations)]) {
    const { plaintext } = await client.decrypt({ ciphertext: wrap, key_id: sealed.keyId, annotations: {} });
    if (!plaintext.equals(sealed.seed))
      throw new Error(`the ${decodeEnvelope(wrap).header.backend} wrap opened to another seed`);
    opened.push(decodeEnvelope(wrap).header.backend);
  }
  return opened;
}

// ---------------------------------------------------------------------------------------------
// Admin API

export interface AdminStatus {
  readonly keyId: string;
  readonly healthz: string;
  readonly degraded: string[];
  readonly underReplicatedKeyIds: string[];
}

export interface AdminBackend {
  readonly name: string;
  readonly healthy: boolean;
  readonly breaker: 'closed' | 'half-open' | 'open';
  readonly reason?: string;
}

export async function adminStatus(admin: AdminClient, token: string): Promise<AdminStatus> {
  const response = await admin.get('/v1/status', token);
  if (response.status !== 200) throw new Error(`/v1/status answered ${response.status}: ${response.text}`);
  return response.body as AdminStatus;
}

export async function adminBackend(admin: AdminClient, token: string, name: string): Promise<AdminBackend> {
  const response = await admin.get('/v1/backends', token);
  if (response.status !== 200) throw new Error(`/v1/backends answered ${response.status}: ${response.text}`);
  const found = (response.body as { backends: AdminBackend[] }).backends.find(b => b.name === name);
  if (found === undefined) throw new Error(`/v1/backends does not list ${name}`);
  return found;
}

/** kms_broker_under_replicated_envelopes_total from GET /metrics. */
export async function underReplicatedTotal(admin: AdminClient): Promise<number> {
  const response = await admin.get('/metrics');
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  const line = response.text
    .split('\n')
    .find(entry => entry.startsWith('kms_broker_under_replicated_envelopes_total '));
  if (line === undefined) throw new Error('/metrics has no kms_broker_under_replicated_envelopes_total');
  return Number(line.split(' ')[1]);
}

/**
 * Asks `probe` (a real request) until `done` holds: a bounded loop, at most `timeoutMs` and
 * 2000 attempts, 20 ms apart. Resolves to the last answer; rejects with it when time runs out.
 */
export async function until<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  what: string,
  timeoutMs = 10000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (let attempt = 0; attempt < 2000 && Date.now() < deadline; attempt++) {
    last = await probe();
    if (done(last)) return last;
    await pause(20);
  }
  throw new Error(`${what}: not reached within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/** A timer for fault schedules and request pacing; never a stand-in for waiting on an event. */
export function pause(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// A seeded PRNG (mulberry32): the soak's faults repeat exactly for a given seed.

export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = state;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}
