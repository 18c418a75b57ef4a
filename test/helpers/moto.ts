// A real moto server (PyPI moto[server], installed by scripts/install.sh into .cache/venv) for
// the AWS KMS backend's tests: one process per server on 127.0.0.1 and a port the OS chose,
// ready once its dashboard answers, stopped by the test that started it. Key setup (keys,
// aliases, alias moves) goes through the real SDK, as an operator's `aws kms` commands would.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import {
  CreateAliasCommand,
  CreateKeyCommand,
  DescribeKeyCommand,
  KMSClient,
  UpdateAliasCommand,
} from '@aws-sdk/client-kms';

export const MOTO_SERVER = new URL('../../.cache/venv/bin/moto_server', import.meta.url).pathname;
export const MOTO_REGION = 'us-east-1';
/** moto's fixed account id, part of every key ARN it makes. */
export const MOTO_ACCOUNT = '123456789012';

const START_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 50;
const STOP_GRACE_MS = 5_000;

/** Servers still running; a test that fails half-way must not leave one behind. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface MotoServer {
  readonly endpoint: string;
  readonly port: number;
  /** A client with moto's dummy credentials, for test setup. */
  readonly kms: KMSClient;
  /** Environment for a broker that uses this server through the SDK's default chain. */
  readonly env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const address = server.address();
  await new Promise<void>(resolve => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port from the OS');
  return address.port;
}

/** Starts moto; `env` adds settings such as INITIAL_NO_AUTH_ACTION_COUNT (IAM checks). */
export async function startMoto(env: Record<string, string> = {}): Promise<MotoServer> {
  const port = await freePort();
  const child = spawn(MOTO_SERVER, ['-H', '127.0.0.1', '-p', String(port)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  live.add(child);
  const output: string[] = [];
  child.stderr?.on('data', (chunk: Buffer) => output.push(String(chunk)));
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const endpoint = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitUntilReady(endpoint, () => child.exitCode !== null);
  } catch (error) {
    await stop();
    throw new Error(`moto did not start: ${String(error)}\n${output.join('').slice(-2000)}`, {
      cause: error,
    });
  }
  const kms = new KMSClient({
    region: MOTO_REGION,
    endpoint,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    maxAttempts: 1,
  });
  return {
    endpoint,
    port,
    kms,
    env: {
      ...process.env,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_EC2_METADATA_DISABLED: 'true',
    },
    stop: async () => {
      kms.destroy();
      await stop();
    },
  };
}

/** Polls moto's dashboard: bounded in time and count, and given up when the process died. */
async function waitUntilReady(endpoint: string, died: () => boolean): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (let attempt = 0; attempt < START_TIMEOUT_MS / POLL_INTERVAL_MS && Date.now() < deadline; attempt++) {
    if (died()) throw new Error('the moto process exited');
    try {
      const response = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(2000) });
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise(resolve => setTimeout(resolve, POLL_INTERVAL_MS));
  }
  throw new Error(`no answer from ${endpoint} within ${START_TIMEOUT_MS} ms`);
}

/** A new symmetric key; returns its id and ARN. */
export async function createKey(kms: KMSClient): Promise<{ keyId: string; arn: string }> {
  const { KeyMetadata } = await kms.send(new CreateKeyCommand({ Description: 'test key' }));
  if (KeyMetadata?.KeyId === undefined || KeyMetadata.Arn === undefined)
    throw new Error('moto made a key without id');
  return { keyId: KeyMetadata.KeyId, arn: KeyMetadata.Arn };
}

/** A key behind a fresh alias, as an operator sets one up. */
export async function createAliasedKey(
  kms: KMSClient,
  alias: string,
): Promise<{ keyId: string; arn: string; alias: string }> {
  const key = await createKey(kms);
  await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: key.keyId }));
  return { ...key, alias };
}

/** A rotation done in AWS itself: the alias now names another key. */
export async function pointAlias(kms: KMSClient, alias: string, keyId: string): Promise<void> {
  await kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: keyId }));
}

export async function aliasTarget(kms: KMSClient, alias: string): Promise<string> {
  const { KeyMetadata } = await kms.send(new DescribeKeyCommand({ KeyId: alias }));
  if (KeyMetadata?.KeyId === undefined) throw new Error(`${alias} names no key`);
  return KeyMetadata.KeyId;
}

/** An aws-kms backend entry for a broker config. */
export function awsBackend(
  endpoint: string,
  key: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return { name: 'aws', type: 'aws-kms', region: MOTO_REGION, endpoint, key, ...overrides };
}
