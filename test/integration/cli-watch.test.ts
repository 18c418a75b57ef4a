// `kms-broker keys --watch` against a live broker, its stdout a pipe: the table once, then one
// line per row that changed (two rotations), nothing for polls that found no change, and exit
// 0 on Ctrl-C. The watcher reaches the broker through a counting proxy in this process, so the
// test knows polls happened without sleeping.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli-run.ts';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const WAIT_MS = 20_000;

/** A loopback HTTP proxy to the broker's admin socket that counts the GETs it forwards. */
function countingProxy(adminSocket: string) {
  let gets = 0;
  const waiters = new Set<() => void>();
  const server = http.createServer((request, response) => {
    if (request.method === 'GET') gets++;
    const upstream = http.request(
      { socketPath: adminSocket, path: request.url, method: request.method, headers: request.headers },
      answer => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response).once('finish', () => waiters.forEach(waiter => waiter()));
      },
    );
    upstream.once('error', () => response.destroy());
    request.pipe(upstream);
  });
  return {
    server,
    get gets() {
      return gets;
    },
    /** Resolves once `count` GETs have been answered in all. */
    answered(count: number): Promise<void> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${gets} of ${count} polls`)), WAIT_MS);
        const check = () => {
          if (gets < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
  };
}

describe('kms-broker keys --watch', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;
  let proxy: ReturnType<typeof countingProxy>;
  let address: string;

  before(async () => {
    token = createToken();
    config = writeConfig(token);
    broker = await startBrokerProcess(config.path, token.env);
    proxy = countingProxy(config.adminSocket);
    await new Promise<void>(resolve => proxy.server.listen(0, '127.0.0.1', resolve));
    address = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    proxy.server.closeAllConnections();
    await new Promise(resolve => proxy.server.close(resolve));
    await broker.stop();
    token.remove();
  });

  /** A `--watch` command polling every 100 ms through the proxy, its output collected as it comes. */
  function watch(args: string[]) {
    const common = ['--interval', '100ms', '--admin', address, '--token-file', `${config.dir}/admin-token`];
    const child = spawn(CLI, [...args, ...common], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = { stdout: '', stderr: '' };
    const onOutput = new Set<() => void>();
    child.stdout.on('data', (chunk: Buffer) => {
      output.stdout += chunk.toString();
      onOutput.forEach(listener => listener());
    });
    child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
    const exited = new Promise<number | null>(resolve => child.once('exit', resolve));
    return { child, output, onOutput, exited };
  }

  it('prints the table, then one line per changed row, nothing for unchanged polls, and exits 0 on SIGINT', async () => {
    const { child: watcher, output, onOutput: changed, exited } = watch(['keys', '--watch']);
    const lines = () => output.stdout.split('\n').filter(line => line !== '');
    const linesReach = (count: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`stdout so far:\n${output.stdout}${output.stderr}`)),
          WAIT_MS,
        );
        const check = () => {
          if (lines().length < count) return;
          clearTimeout(timer);
          changed.delete(check);
          resolve();
        };
        changed.add(check);
        check();
      });
    const rotate = async () => {
      const run = await runCli(['rotate', 'hsm', '--config', config.path]);
      assert.equal(run.code, 0, run.stderr);
    };

    try {
      await linesReach(2);
      // Several polls with nothing new: still the header and one row.
      await proxy.answered(proxy.gets + 3);
      assert.deepEqual(lines().length, 2, output.stdout);
      assert.match(lines()[0] ?? '', /^BACKEND\s+VERSION\s+ROLE\s+AGE\s+LAST DECRYPT\s+DECRYPTS$/);
      assert.match(lines()[1] ?? '', /^hsm\s+1\s+write\s+\d+s\s+-\s+0$/);

      await rotate();
      await linesReach(4);
      await rotate();
      await linesReach(6);
      await proxy.answered(proxy.gets + 3);
      assert.equal(lines().length, 6, output.stdout);
      assert.deepEqual(
        lines()
          .slice(2)
          .map(line => line.split(/\s+/).slice(0, 3).join(' ')),
        ['hsm 1 active', 'hsm 2 write', 'hsm 2 active', 'hsm 3 write'],
      );
    } finally {
      watcher.kill('SIGINT');
    }
    assert.equal(await exited, 0, output.stderr);
    assert.equal(output.stderr, '');
  });

  it('prints a changed answer again as a whole document with -o yaml, once per change', async () => {
    const { child: watcher, output, exited } = watch(['backends', '-w', '-o', 'yaml']);
    try {
      await proxy.answered(proxy.gets + 3);
      assert.equal(output.stdout.match(/^backends:$/gm)?.length, 1, output.stdout);
      assert.match(output.stdout, /writeVersion: "3"/);
      await runCli(['rotate', 'hsm', '--config', config.path]);
      await proxy.answered(proxy.gets + 3);
      assert.equal(output.stdout.match(/^---$/gm)?.length, 1, output.stdout);
      assert.match(output.stdout, /writeVersion: "4"/);
    } finally {
      watcher.kill('SIGINT');
    }
    assert.equal(await exited, 0);
  });
});
