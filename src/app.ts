// Wires a validated config into a running broker: backends, state store, broker, gRPC
// server. Dependencies come in so tests can swap them.
import { readFileSync } from 'node:fs';
import { createBackends } from './backends/registry.ts';
import type { KekBackend } from './backends/kek.ts';
import { Broker } from './broker/broker.ts';
import type { StateStore } from './broker/state/state-store.ts';
import { stateStoreFor } from './cluster/state-store-for.ts';
import type { BrokerConfig } from './config/schema.ts';
import type { FileReader } from './file-reader.ts';
import { readSecret, type SecretReader } from './secrets.ts';
import { kmsV1Handlers } from './grpc/kms-v1-service.ts';
import { kmsV2Handlers } from './grpc/kms-v2-service.ts';
import { loadService } from './grpc/proto.ts';
import { KmsServer } from './grpc/server.ts';
import type { Logger } from './log.ts';
import type { AdminServer } from './admin/server.ts';
import { Metrics } from './metrics/metrics.ts';
import { VERSION } from './version.ts';

export interface AppDeps {
  readonly logger: Logger;
  readonly readSecret?: SecretReader;
  /** The config's non-secret files, as loadConfigFile read and checked them (default: the disk). */
  readonly readFile?: FileReader;
  readonly backends?: ReadonlyMap<string, KekBackend>;
  readonly stateStore?: StateStore;
  readonly metrics?: Metrics;
}

export interface RunningApp {
  readonly broker: Broker;
  /** Where the admin API listens, when it is enabled. */
  readonly adminAddress: string | undefined;
  /** Stops serving (draining in-flight calls), closes backends, removes the socket. */
  shutdown(): Promise<void>;
}

export async function startBroker(config: BrokerConfig, deps: AppDeps): Promise<Broker> {
  return Broker.start({
    // Process metrics too (resident memory, event-loop delay, GC): what an operator reads
    // first when calls slow down, and what `npm run bench` reads during the decrypt storm.
    metrics: deps.metrics ?? new Metrics({ defaultMetrics: true }),
    config,
    backends:
      deps.backends ??
      (await createBackends(config.backends, {
        readSecret: deps.readSecret ?? readSecret,
        readFile: deps.readFile ?? readFileSync,
        logger: deps.logger,
      })),
    stateStore: deps.stateStore ?? stateStoreFor(config, deps.logger),
    logger: deps.logger,
  });
}

export async function startApp(config: BrokerConfig, appDeps: AppDeps): Promise<RunningApp> {
  const deps = { ...appDeps, metrics: appDeps.metrics ?? new Metrics({ defaultMetrics: true }) };
  const broker = await startBroker(config, deps);
  let server: KmsServer | undefined;
  let admin: AdminServer | undefined;
  let serving = false;
  try {
    server = await KmsServer.listen({
      socketPath: config.socket,
      socketMode: parseInt(config.socketMode, 8),
      services: [
        {
          definition: loadService('kms-v2.proto', 'v2.KeyManagementService'),
          handlers: kmsV2Handlers(broker.kms, deps.metrics),
        },
        ...(config.kmsV1.enabled
          ? [
              {
                definition: loadService('kms-v1beta1.proto', 'v1beta1.KeyManagementService'),
                handlers: kmsV1Handlers(broker.kms, deps.metrics),
              },
            ]
          : []),
      ],
      logger: deps.logger,
    });
    serving = true;
    if (config.admin.enabled) {
      // Loaded only when the admin listener is on: fastify, its schema compilers and the
      // OpenAPI plugin are several MB of a broker's RSS (docs/performance.md#memory).
      const [{ startAdminServer }, { createAuthenticator }] = await Promise.all([
        import('./admin/server.ts'),
        import('./admin/auth.ts'),
      ]);
      admin = await startAdminServer(
        config.admin,
        {
          admin: broker.admin,
          metrics: deps.metrics,
          authenticate: createAuthenticator(config.admin, deps.readSecret ?? readSecret),
          audit: deps.logger.child({ name: 'audit' }),
          isServing: () => serving,
          metricsAuth: config.admin.metricsAuth,
          version: VERSION,
        },
        deps.logger,
        deps.readFile ?? readFileSync,
      );
    }
  } catch (error) {
    await server?.shutdown(0);
    await broker.close();
    throw error;
  }
  // One line that says every listener serves: what supervisors and tests wait for.
  deps.logger.info({ socket: config.socket, admin: admin?.address ?? null }, 'broker ready');
  const kms = server;
  let stopping: Promise<void> | undefined;
  return {
    broker,
    adminAddress: admin?.address,
    shutdown() {
      stopping ??= (async () => {
        deps.logger.info('shutting down');
        serving = false;
        await kms.shutdown(config.timeouts.shutdownGraceMs);
        await admin?.close();
        await broker.close();
        deps.logger.info('stopped');
      })();
      return stopping;
    },
  };
}
