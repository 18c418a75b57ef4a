// The broker, assembled: backends opened, the key set reconciled with its store, health
// probing, rotation watching and usage flushing started. Adapters get its two ports (`kms`
// for src/grpc, `admin` for src/admin and the CLI); its parts stay private.
import type { KekBackend } from '../backends/kek.ts';
import type { BrokerConfig } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { createAdminService } from './admin-service.ts';
import { BackendCalls } from './backend-calls.ts';
import { HealthMonitor } from './health/health-monitor.ts';
import { connectReachable, JoiningBackend } from './joining-backend.ts';
import { KeySet } from './keys/key-set.ts';
import { localBroker } from './keys/peer-confirmation.ts';
import { RotationWatch } from './keys/rotation-watch.ts';
import { SerialQueue } from './keys/serial-queue.ts';
import { StateSync } from './keys/state-sync.ts';
import { UsageLog } from './keys/usage.ts';
import { VersionLookup } from './keys/version-lookup.ts';
import { createKmsService } from './kms-service.ts';
import type { AdminService, KmsService } from './ports.ts';
import { createRebalancer } from './rebalancer.ts';
import type { StateStore } from './state/state-store.ts';
import { ThinSeeds } from './thin-seeds.ts';

export interface BrokerDeps {
  readonly config: BrokerConfig;
  /** Backends by name, not yet opened. */
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly stateStore: StateStore;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly now?: () => Date;
}

const USAGE_FLUSH_INTERVAL_MS = 60000;
/** How long start-up waits for each backend (in parallel) before serving without it. */
const START_CALL_MS = 15000;

export class Broker {
  readonly kms: KmsService;
  readonly admin: AdminService;
  readonly #backends: ReadonlyMap<string, KekBackend>;
  readonly #sync: StateSync;
  readonly #keys: KeySet;
  readonly #health: HealthMonitor;
  readonly #rotationWatch: RotationWatch;
  readonly #flushTimer: NodeJS.Timeout;
  readonly #stateStore: StateStore;

  private constructor(deps: BrokerDeps, sync: StateSync, queue: SerialQueue, now: () => Date) {
    const { config, backends, logger, metrics } = deps;
    this.#backends = backends;
    this.#sync = sync;
    this.#stateStore = deps.stateStore;
    const usage = new UsageLog(now);
    const keys = new KeySet({
      config,
      backends,
      registry: sync.registry,
      queue,
      store: deps.stateStore,
      usage,
      logger,
      now,
      onStateWriteFailure: () => metrics.stateWriteFailed(),
      onCommitted: () => deps.stateStore.shared?.advertisedChanged(),
    });
    this.#keys = keys;
    const health = new HealthMonitor(
      [...backends.values()],
      { ...config.health, writeVersion: backend => keys.writeVersion(backend)?.version },
      logger,
      metrics,
    );
    this.#health = health;
    const thinSeeds = new ThinSeeds(
      sync.registry.thinSeeds(),
      seeds => void keys.recordThinSeeds(seeds),
      now,
    );
    const rebalance = createRebalancer({
      keys,
      health,
      thinSeeds,
      hysteresisMs: config.failover.hysteresisMs,
      logger,
    });
    health.onChange(() => void rebalance());
    this.#rotationWatch = new RotationWatch({
      backends: [...backends.values()],
      writeVersion: backend => keys.writeVersion(backend),
      adopt: (backend, info) => keys.adopt(backend, info),
      logger,
    });
    const lookup = new VersionLookup({
      backends,
      onListed: (backend, listed) =>
        void keys.adoptListing(backend, listed).catch(() => {
          // Not persisted now: the next reload or commit records the version.
        }),
      logger,
    });
    this.kms = createKmsService({
      callMs: config.timeouts.callMs,
      backends,
      keys,
      usage,
      lookup,
      health,
      calls: new BackendCalls(health, metrics),
      thinSeeds,
      metrics,
      logger,
    });
    const shared = deps.stateStore.shared;
    this.admin = createAdminService({
      kms: this.kms,
      backends,
      keys,
      usage,
      health,
      thinSeeds,
      startedAt: now(),
      cluster: shared === undefined ? undefined : () => shared.view(),
    });
    if (shared !== undefined) metrics.clusterFrom(() => shared.view());
    metrics.keySetFrom(() => ({
      keyId: keys.current.keyId,
      writeVersions: [...backends.keys()].flatMap(backend => {
        const version = keys.writeVersion(backend)?.version;
        return version === undefined ? [] : [{ backend, version }];
      }),
    }));
    metrics.statusFrom(() => this.admin.status());
    metrics.rotationFrom(() => this.admin.rotation());
    this.#flushTimer = setInterval(() => void keys.flushUsage(), USAGE_FLUSH_INTERVAL_MS).unref();
  }

  /**
   * Connects every backend it can reach, reconciles the stored state with what they hold,
   * and starts probing; the backends it could not reach join when a probe reaches them.
   */
  static async start(deps: BrokerDeps): Promise<Broker> {
    const now = deps.now ?? (() => new Date());
    const gates = new Map([...deps.backends].map(([name, backend]) => [name, new JoiningBackend(backend)]));
    try {
      const listings = await connectReachable([...gates.values()], START_CALL_MS, deps.logger);
      const queue = new SerialQueue();
      const reachable = () => new Map([...gates].filter(([, gate]) => gate.connected));
      const sync = await StateSync.open(
        { config: deps.config, reachable, store: deps.stateStore, queue, logger: deps.logger, now },
        listings,
      );
      for (const gate of gates.values()) gate.onJoin((backend, listed) => sync.join(backend, listed));
      const broker = new Broker({ ...deps, backends: gates }, sync, queue, now);
      sync.start();
      // Registered only once it serves: a peer's proposal waits for it from then on.
      deps.stateStore.shared?.join(
        localBroker({ config: deps.config, backends: gates, keys: broker.#keys, logger: deps.logger }),
      );
      broker.#health.start();
      broker.#rotationWatch.start();
      deps.logger.info(
        { keyId: broker.#keys.current.keyId, backends: [...deps.backends.keys()] },
        'broker started',
      );
      return broker;
    } catch (error) {
      await Promise.allSettled([...gates.values()].map(backend => backend.close()));
      throw error;
    }
  }

  /** One probe round of every backend now (tests, and a CLI that wants fresh health). */
  probeNow(): Promise<void> {
    return this.#health.probeAll();
  }

  async close(): Promise<void> {
    this.#health.stop();
    this.#rotationWatch.stop();
    this.#sync.stop();
    clearInterval(this.#flushTimer);
    await this.#keys.flushUsage();
    await this.#stateStore.shared?.close();
    await Promise.allSettled([...this.#backends.values()].map(backend => backend.close()));
  }
}
