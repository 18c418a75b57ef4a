// A connection flood from another local process, against both listeners of a real
// `kms-broker serve`: idle connections beyond each listener's cap, that never send a byte.
// While they sit there, the apiserver's connection and a new client keep getting Encrypt
// answered and /readyz keeps answering; the broker logs that it hit its caps; and the
// broker's own timeouts close every flood connection within a stated bound.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import {
  HEADERS_TIMEOUT_MS,
  MAX_ADMIN_CONNECTIONS,
  TIMEOUT_CHECK_INTERVAL_MS,
} from '../../src/admin/limits.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { KMS_PREFACE_TIMEOUT_MS, MAX_KMS_CONNECTIONS } from '../../src/grpc/server.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import type { FloodReport } from '../helpers/connection-flood.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const FLOOD_SCRIPT = new URL('../helpers/connection-flood.ts', import.meta.url).pathname;
/** Every flood connection is gone this long after the flood started (with slack for a busy machine). */
const CLOSE_BOUND_MS =
  Math.max(HEADERS_TIMEOUT_MS + TIMEOUT_CHECK_INTERVAL_MS, KMS_PREFACE_TIMEOUT_MS) + 10_000;

interface Flood {
  readonly child: ChildProcess;
  latest(): FloodReport;
  waitFor(predicate: (report: FloodReport) => boolean, timeoutMs: number): Promise<FloodReport>;
}

function startFlood(adminAddress: string, kmsSocket: string, adminCount: number, kmsCount: number): Flood {
  const { hostname, port } = new URL(adminAddress);
  const child = spawn(
    process.execPath,
    [FLOOD_SCRIPT, hostname, port, kmsSocket, String(adminCount), String(kmsCount)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let latest: FloodReport = { admin: 0, kms: 0, settled: false };
  const listeners = new Set<() => void>();
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', line => {
    latest = JSON.parse(line) as FloodReport;
    for (const listener of listeners) listener();
  });
  return {
    child,
    latest: () => latest,
    waitFor: (predicate, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!predicate(latest)) return;
          clearTimeout(timer);
          listeners.delete(check);
          resolve(latest);
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`flood never reported the expected state; last: ${JSON.stringify(latest)}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      }),
  };
}

async function stopByPid(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise(resolve => child.once('exit', resolve));
  process.kill(child.pid, 'SIGKILL');
  await exited;
}

describe('connection floods against both listeners', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;
  let adminAddress: string;
  let flood: Flood | undefined;

  before(async () => {
    token = createToken();
    const base = writeConfig(token);
    config = writeConfig(
      token,
      { admin: { ...(base.values.admin as Record<string, unknown>), listen: '127.0.0.1:0' } },
      base.dir,
    );
    broker = await startBrokerProcess(config.path, token.env);
    adminAddress = (await broker.waitForLog(record => record.msg === 'admin API listening'))
      .address as string;
  });

  after(async () => {
    await stopByPid(flood?.child);
    await broker?.stop();
    token?.remove();
  });

  it('keeps answering Encrypt and /readyz while idle connections beyond the caps sit there, then closes them all within a bound', async () => {
    // Connected before the flood, as the apiserver's long-lived connection is.
    const apiserver = createKmsV2Client(config.socket);
    await apiserver.status();
    const adminCount = MAX_ADMIN_CONNECTIONS + 80;
    const kmsCount = MAX_KMS_CONNECTIONS + 80;
    const started = Date.now();
    flood = startFlood(adminAddress, config.socket, adminCount, kmsCount);
    try {
      // The broker closes the excess at once, down to its caps, and holds the rest.
      const sitting = await flood.waitFor(
        report =>
          report.settled && report.admin <= MAX_ADMIN_CONNECTIONS && report.kms <= MAX_KMS_CONNECTIONS,
        15_000,
      );
      assert.ok(
        sitting.admin > 0 && sitting.kms > 0,
        `the flood holds connections: ${JSON.stringify(sitting)}`,
      );

      // While it sits there: the standing connection, a new client and a readiness probe.
      const seed = randomBytes(32);
      const encrypted = await apiserver.encrypt(seed);
      const newcomer = createKmsV2Client(config.socket);
      try {
        const second = await newcomer.encrypt(seed);
        assert.deepEqual((await newcomer.decrypt(encrypted)).plaintext, seed);
        assert.deepEqual((await apiserver.decrypt(second)).plaintext, seed);
      } finally {
        newcomer.close();
      }
      const ready = await adminClient(adminAddress, 3000).get('/readyz');
      assert.equal(ready.status, 200, ready.text);

      for (const listener of ['admin', 'kms']) {
        const warning = await broker.waitForLog(
          record =>
            record.msg === 'connection limit reached; closed the longest-idle connections' &&
            record.listener === listener,
          5000,
        );
        assert.equal(warning.level, 'warn', 'logged as a warning');
        assert.ok((warning.closed as number) > 0);
      }

      // The broker's timeouts, not the flood, end every connection it still holds.
      const drained = await flood.waitFor(report => report.admin === 0 && report.kms === 0, CLOSE_BOUND_MS);
      assert.deepEqual(drained, { admin: 0, kms: 0, settled: true });
      assert.ok(Date.now() - started <= CLOSE_BOUND_MS, `closed within ${CLOSE_BOUND_MS} ms`);
      assert.equal((await apiserver.status()).healthz, 'ok');
    } finally {
      apiserver.close();
      await stopByPid(flood.child);
    }
  });
});
