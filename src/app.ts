// Wires a validated config into a running broker: backends, state store, broker, gRPC
// server. Dependencies come in so tests can swap them.
import { createBackends } from './backends/registry.ts';
import type { KekBackend } from './backends/kek.ts';
import { Broker } from './broker/broker.ts';
import { fileStateStore, type StateStore } from './broker/state-store.ts';
import type { BrokerConfig } from './config/schema.ts';
import { readSecret, type SecretReader } from './config/secrets.ts';
import { kmsV2Handlers } from './grpc/kms-v2-service.ts';
import { loadService } from './grpc/proto.ts';
import { KmsServer } from './grpc/server.ts';
import type { Logger } from './log.ts';

export interface AppDeps {
  readonly logger: Logger;
  readonly readSecret?: SecretReader;
  readonly backends?: ReadonlyMap<string, KekBackend>;
  readonly stateStore?: StateStore;
}

export interface RunningApp {
  readonly broker: Broker;
  /** Stops serving (draining in-flight calls), closes backends, removes the socket. */
  shutdown(): Promise<void>;
}

export async function startBroker(config: BrokerConfig, deps: AppDeps): Promise<Broker> {
  return Broker.start({
    config,
    backends:
      deps.backends ??
      createBackends(config.backends, { readSecret: deps.readSecret ?? readSecret, logger: deps.logger }),
    stateStore: deps.stateStore ?? fileStateStore(config.state.path),
    logger: deps.logger,
  });
}

export async function startApp(config: BrokerConfig, deps: AppDeps): Promise<RunningApp> {
  const broker = await startBroker(config, deps);
  let server: KmsServer;
  try {
    server = await KmsServer.listen({
      socketPath: config.socket,
      socketMode: parseInt(config.socketMode, 8),
      services: [
        {
          definition: loadService('kms-v2.proto', 'v2.KeyManagementService'),
          handlers: kmsV2Handlers(broker),
        },
      ],
      logger: deps.logger,
    });
  } catch (error) {
    await broker.close();
    throw error;
  }
  let stopping: Promise<void> | undefined;
  return {
    broker,
    shutdown() {
      stopping ??= (async () => {
        deps.logger.info('shutting down');
        await server.shutdown(config.timeouts.shutdownGraceMs);
        await broker.close();
        deps.logger.info('stopped');
      })();
      return stopping;
    },
  };
}
