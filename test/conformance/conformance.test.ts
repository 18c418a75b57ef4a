// Conformance: the apiserver's own KMS v2 client code (k8s.io/apiserver kmsv2: its gRPC
// service client and envelope transformer), built from the Go module proxy, drives a real
// broker on a real SoftHSM token through writes, cold reads, a rotation and garbage.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig, type TestConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const run = promisify(execFile);
const harnessDir = new URL('.', import.meta.url).pathname;
const harness = `${harnessDir}bin/conformance`;

describe('conformance with the apiserver KMS v2 client', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;

  before(async () => {
    // The first build compiles k8s.io/apiserver (about a minute on 2 cores); later ones hit Go's cache.
    await run('go', ['build', '-o', 'bin/conformance', '.'], { cwd: harnessDir, timeout: 600000 });
    token = createToken();
    config = writeConfig(token);
    broker = await startBrokerProcess(config.path, token.env);
  });

  after(async () => {
    await broker?.stop();
    token?.remove();
  });

  it('writes, reads cold, rotates and reads again through the apiserver code', async () => {
    const rotate = `'${CLI}' rotate --config '${config.path}'`;
    const { stdout, stderr } = await run(
      harness,
      ['--endpoint', `unix://${config.socket}`, '--rotate-command', rotate, '--values', '300'],
      {
        env: token.env,
        timeout: 120000,
      },
    );
    const summary = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as {
      ok: boolean;
      values: number;
      status_key_id_before: string;
      status_key_id_after: string;
      decrypt_rpcs: number;
    };
    assert.equal(summary.ok, true, stderr);
    assert.equal(summary.values, 600);
    assert.notEqual(summary.status_key_id_before, summary.status_key_id_after);
    assert.ok(summary.decrypt_rpcs > 0);
    assert.match(stderr, /step 8 ok/);
  });
});
