// The usual end-to-end arrangement: a kms-broker process on a fresh SoftHSM token, and a
// cluster (etcd, no apiserver yet) for it. One stop() tears everything down in order.
import { rmSync } from 'node:fs';
import {
  isWarningOrWorse,
  startBrokerProcess,
  type BrokerProcess,
  type LogRecord,
} from './broker-process.ts';
import { writeConfig, type TestConfig } from './config.ts';
import { startCluster, type Cluster } from './kube-cluster.ts';
import { createToken } from './softhsm.ts';

export interface BrokerCluster {
  readonly config: TestConfig;
  readonly broker: BrokerProcess;
  readonly cluster: Cluster;
  /** Environment for a process that uses the broker's token (a CLI command that opens its backends). */
  readonly env: NodeJS.ProcessEnv;
  /** The apiserver and etcd, then the broker, then the token and config folders. */
  stop(): Promise<void>;
}

/** `overrides`: broker config keys to set (as writeConfig takes them). */
export async function startBrokerCluster(
  tokenLabel: string,
  overrides: Record<string, unknown> = {},
): Promise<BrokerCluster> {
  const token = createToken(tokenLabel);
  const config = writeConfig(token, overrides);
  const removeFiles = () => {
    token.remove();
    rmSync(config.dir, { recursive: true, force: true });
  };
  let broker: BrokerProcess | undefined;
  try {
    broker = await startBrokerProcess(config.path, token.env);
    const cluster = await startCluster();
    const running = broker;
    return {
      config,
      broker: running,
      cluster,
      env: token.env,
      async stop() {
        try {
          await cluster.stop();
          await running.stop();
          // Shown in the test report, so a failure comes with the broker's side of the story.
          process.stdout.write(problems(running.logs));
        } finally {
          removeFiles();
        }
      },
    };
  } catch (error) {
    await broker?.stop();
    removeFiles();
    throw error;
  }
}

/** The broker's warnings and errors as report lines (its logs never hold secrets). */
function problems(logs: readonly LogRecord[]): string {
  return logs
    .filter(isWarningOrWorse)
    .map(record => `# broker: ${JSON.stringify(record)}\n`)
    .join('');
}
