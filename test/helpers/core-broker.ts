// A broker core on in-memory backends, for unit tests: the real Broker (key set, state sync,
// health, failover) with MemoryBackends and a state store in memory or in a temp file.
import { pino } from 'pino';
import { Broker } from '../../src/broker/broker.ts';
import type { BrokerState } from '../../src/broker/state/state-schema.ts';
import type { StateStore } from '../../src/broker/state/state-store.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { BrokerConfig } from '../../src/config/schema.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { MemoryBackend } from './memory-backend.ts';
import { memoryLog, type MemoryLog } from './memory-log.ts';

export interface CoreOptions {
  /** Backend names, each a MemoryBackend holding one version unless `backends` says otherwise. */
  readonly names?: readonly string[];
  readonly backends?: readonly MemoryBackend[];
  readonly wrap?: 'all' | 'first';
  readonly store?: StateStore;
  /** Config overrides merged into the generated config (health, failover, retirement, timeouts). */
  readonly config?: Record<string, unknown>;
}

export interface Core {
  readonly broker: Broker;
  readonly backends: ReadonlyMap<string, MemoryBackend>;
  readonly store: StateStore;
  readonly log: MemoryLog;
  readonly config: BrokerConfig;
  close(): Promise<void>;
}

/** A memory backend as the config names it: a pkcs11 entry whose fields the broker never reads. */
export function memoryBackendEntry(name: string): Record<string, unknown> {
  return {
    name,
    type: 'pkcs11',
    module: '/usr/lib/softhsm/libsofthsm2.so',
    tokenLabel: name,
    pinEnv: 'UNUSED_PIN',
    keyLabel: 'kek',
  };
}

/** A config naming the memory backends. */
export function coreConfig(names: readonly string[], wrap: 'all' | 'first', overrides = {}): BrokerConfig {
  return validateConfig({
    socket: '/run/kms-broker-unit/kms.sock',
    state: { path: '/run/kms-broker-unit/state.json' },
    admin: { enabled: false },
    // Probes only when a test asks (probeNow): no timer races the test's own steps.
    health: { probeIntervalMs: 3600000, failureThreshold: 1, openCooldownMs: 600000 },
    backends: names.map(memoryBackendEntry),
    failover: { order: [...names], wrap, hysteresisMs: 0 },
    ...overrides,
  });
}

export async function startCore(options: CoreOptions = {}): Promise<Core> {
  const backends =
    options.backends ?? (options.names ?? ['hsm']).map(name => new MemoryBackend({ name, versions: 1 }));
  const byName = new Map(backends.map(backend => [backend.name, backend]));
  const config = coreConfig(
    backends.map(backend => backend.name),
    options.wrap ?? 'all',
    options.config,
  );
  const store = options.store ?? memoryStateStore();
  const log = memoryLog();
  const broker = await Broker.start({
    config,
    backends: byName,
    stateStore: store,
    logger: pino({ level: 'debug' }, log.stream),
    metrics: new Metrics(),
  });
  // The start-up probe round is in flight: settle it, so a test's own faults meet fresh probes.
  await broker.probeNow();
  return { broker, backends: byName, store, log, config, close: () => broker.close() };
}

export interface MemoryStateStore extends StateStore {
  readonly saves: number;
  /** What is stored now. */
  current(): BrokerState | undefined;
  /** Another writer changes the state: the broker's watch hears of it. */
  writeAsAnother(state: BrokerState): void;
  /** Saves fail from now on with this errno code, until undefined is passed. */
  failSaves(code: string | undefined): void;
}

export function memoryStateStore(initial?: BrokerState): MemoryStateStore {
  let stored = initial === undefined ? undefined : structuredClone(initial);
  let saves = 0;
  let failure: string | undefined;
  const listeners = new Set<() => void>();
  return {
    location: 'memory',
    get saves() {
      return saves;
    },
    load: () => Promise.resolve(stored === undefined ? undefined : structuredClone(stored)),
    save(state) {
      if (failure !== undefined)
        return Promise.reject(Object.assign(new Error('save failed'), { code: failure }));
      saves++;
      stored = structuredClone(state);
      return Promise.resolve();
    },
    watch(onChange) {
      listeners.add(onChange);
      return () => listeners.delete(onChange);
    },
    current: () => (stored === undefined ? undefined : structuredClone(stored)),
    writeAsAnother(state) {
      stored = structuredClone(state);
      for (const listener of listeners) listener();
    },
    failSaves(code) {
      failure = code;
    },
  };
}

/** Polls `read` until `accept` holds, at most `attempts` times `intervalMs` apart. */
export async function until<T>(
  read: () => T | Promise<T>,
  accept: (value: T) => boolean,
  what: string,
  { attempts = 200, intervalMs = 10 } = {},
): Promise<T> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const value = await read();
    if (accept(value)) return value;
    await new Promise(resolve => setTimeout(resolve, intervalMs));
  }
  throw new Error(`${what}: not reached after ${attempts} attempts`);
}

/** Runs `test` on a started core, and closes the core whatever the outcome. */
export async function withCore(options: CoreOptions, test: (core: Core) => Promise<void>): Promise<void> {
  const core = await startCore(options);
  try {
    await test(core);
  } finally {
    await core.close();
  }
}
