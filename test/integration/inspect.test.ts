// `kms-broker inspect` through the real CLI, on values made for real: KMS v2 values a broker on
// SoftHSM and OpenBao wrapped (wrap: all), read from a file, stdin and a real etcd; the other
// storage formats as kube-apiserver lays them out; and inputs that are no stored value. Every
// output is checked to hold no plaintext and no wrapped bytes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  decodeEnvelope,
  encodeEnvelope,
  headerAad,
  WRAP_ANNOTATION_SUFFIX,
} from '../../src/broker/envelope.ts';
import { ESCROW_MECHANISM, sealToEscrow } from '../../src/escrow/hybrid-wrap.ts';
import { fingerprint, generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import type { Explanation } from '../../src/inspect/explain.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';
import { pkcs11Backend, vaultBackend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { putAll } from '../helpers/etcd-kv.ts';
import { startEtcd, type Etcd } from '../helpers/kube-etcd.ts';
import { enableTransit, startDevServer, type BaoServer } from '../helpers/openbao.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { brokerV1Value, identityValue, kmsV2Value, localValue } from '../helpers/stored-values.ts';

/** A Secret as kube-apiserver stores it, with a seed the running broker wrapped. */
interface MadeValue {
  readonly value: Buffer;
  readonly keyId: string;
  /** Must never appear in any output: the seed and every wrap's wrapped bytes. */
  readonly secrets: readonly Buffer[];
  readonly seed: Buffer;
  readonly ciphertext: Buffer;
  readonly annotations: Record<string, Buffer>;
}

describe('kms-broker inspect', () => {
  let dir: string;
  let token: SoftHsmToken;
  let bao: BaoServer;
  let config: TestConfig;
  let broker: BrokerProcess;
  let client: KmsV2Client;
  let etcd: Etcd;
  let made: MadeValue;
  const outputs: CliRun[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-inspect-'));
    token = createToken();
    bao = await startDevServer();
    await enableTransit(bao);
    const baoToken = join(dir, 'bao-token');
    writeFileSync(baoToken, `${bao.rootToken}\n`, { mode: 0o600 });
    config = writeConfig(token, {
      backends: [pkcs11Backend(token), vaultBackend(bao.address, { method: 'token', tokenFile: baoToken })],
      failover: { order: ['hsm', 'vault'], wrap: 'all' },
    });
    broker = await startBrokerProcess(config.path, token.env);
    client = createKmsV2Client(config.socket);
    etcd = await startEtcd(dir);
    made = await makeValue();
  });

  after(async () => {
    client.close();
    await broker.stop();
    await etcd.stop();
    await bao.stop();
    token.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  async function makeValue(): Promise<MadeValue> {
    const seed = randomBytes(32);
    const encrypted = await client.encrypt(seed);
    const envelopes = [encrypted.ciphertext, ...Object.values(encrypted.annotations)];
    return {
      value: kmsV2Value('kms-broker', {
        keyId: encrypted.key_id,
        ciphertext: encrypted.ciphertext,
        annotations: encrypted.annotations,
      }),
      keyId: encrypted.key_id,
      secrets: [seed, ...envelopes.map(envelope => decodeEnvelope(envelope).wrapped)],
      seed,
      ciphertext: encrypted.ciphertext,
      annotations: encrypted.annotations,
    };
  }

  /** Runs inspect; every output is kept and checked for secrets after the test. */
  async function inspect(args: readonly string[], input?: Buffer): Promise<CliRun> {
    const run = await runCli(['inspect', ...args], input === undefined ? {} : { input });
    outputs.push(run);
    for (const secret of made.secrets) assertAbsent(run, secret);
    return run;
  }

  function file(name: string, value: Buffer): string {
    const path = join(dir, name);
    writeFileSync(path, value);
    return path;
  }

  it('explains a KMS v2 value wrapped by HSM and OpenBao (wrap: all): both wraps unwrap now', async () => {
    const path = file('v2.bin', made.value);
    const json = await inspect(['--file', path, '--config', config.path, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const explained = JSON.parse(json.stdout) as Explanation;
    assert.equal(explained.format, 'kms-v2');
    assert.equal(explained.provider, 'kms-broker');
    assert.equal(explained.keyId, made.keyId);
    assert.equal(explained.keyIdIsBrokers, true);
    assert.deepEqual(explained.encryptedObject?.annotations, ['vault.wrap.kms-broker.io']);
    assert.equal(explained.encryptedObject?.dekSourceType, 'HKDF_SHA256_XNONCE_AES_GCM_SEED');
    assert.equal(explained.broker?.owner, 'broker');
    const wraps = explained.broker?.owner === 'broker' ? explained.broker.wraps : [];
    assert.deepEqual(
      wraps.map(wrap => [wrap.backend, wrap.version, wrap.location, wrap.envelopeFormat, wrap.unwrap.now]),
      [
        ['hsm', '1', 'ciphertext', 3, 'yes'],
        ['vault', '1', 'annotation', 3, 'yes'],
      ],
    );
    assert.equal(wraps[1]?.mechanism, 'transit');

    const human = await inspect(['--file', path, '--config', config.path]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^format: +KMS v2 \(k8s:enc:kms:v2\)$/m);
    assert.match(human.stdout, new RegExp(`^key_id: +${made.keyId} `, 'm'));
    assert.match(
      human.stdout,
      /^envelope: +kms-broker envelope format 3, wraps bound to one seed; 2 wrap\(s\)$/m,
    );
    assert.match(human.stdout, /^hsm +1 +\S+ +ciphertext +\d+ bytes +yes$/m);
    assert.match(
      human.stdout,
      /^vault +1 +transit +annotation vault\.wrap\.kms-broker\.io +\d+ bytes +yes$/m,
    );
  });

  it('reads the value from stdin, and from a real etcd key (with and without the prefix)', async () => {
    const fromStdin = await inspect(['-', '--json'], made.value);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    assert.equal((JSON.parse(fromStdin.stdout) as Explanation).source, 'stdin');

    await putAll(etcd.url, [['/registry/secrets/default/db', made.value]]);
    for (const key of ['/registry/secrets/default/db', 'secrets/default/db']) {
      const run = await inspect(['--from-etcd', key, '--etcd-endpoints', etcd.url, '--json']);
      assert.equal(run.code, 0, run.stderr);
      const explained = JSON.parse(run.stdout) as Explanation;
      assert.equal(explained.source, 'etcd key /registry/secrets/default/db');
      assert.equal(explained.keyId, made.keyId);
      assert.equal(explained.bytes, made.value.length);
    }
  });

  it('names a missing etcd key and the fix (exit 1)', async () => {
    const run = await inspect(['--from-etcd', 'secrets/default/absent', '--etcd-endpoints', etcd.url]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /ETCD_KEY_NOT_FOUND: etcd has no key \/registry\/secrets\/default\/absent;/);
    assert.match(run.stderr, /etcdctl get --prefix --keys-only \/registry\/secrets\/default\//);
  });

  it("explains an escrow wrap and says it opens only offline, with its key's shares", async () => {
    const { publicKey } = generateEscrowKeyPair();
    const sealed = decodeEnvelope(made.ciphertext);
    const header = {
      backend: 'escrow',
      keyVersion: fingerprint(publicKey),
      mechanism: ESCROW_MECHANISM,
      binding: sealed.header.binding,
    };
    const aad = headerAad(header);
    const escrowWrap = encodeEnvelope(aad, sealToEscrow(publicKey, made.seed, aad));
    const value = kmsV2Value('kms-broker', {
      keyId: made.keyId,
      ciphertext: made.ciphertext,
      annotations: { ...made.annotations, [`escrow${WRAP_ANNOTATION_SUFFIX}`]: escrowWrap },
    });
    const run = await inspect(['--file', file('v2-escrow.bin', value), '--config', config.path, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const explained = JSON.parse(run.stdout) as Explanation;
    const wraps = explained.broker?.owner === 'broker' ? explained.broker.wraps : [];
    const escrow = wraps.find(wrap => wrap.backend === 'escrow');
    assert.deepEqual(
      [escrow?.mechanism, escrow?.version, escrow?.location, escrow?.unwrap],
      [
        ESCROW_MECHANISM,
        fingerprint(publicKey),
        'annotation',
        {
          now: 'no',
          reason: `escrow wrap: opens offline with the shares of escrow key ${fingerprint(publicKey)}`,
        },
      ],
    );
    assertAbsent(run, decodeEnvelope(escrowWrap).wrapped);
  });

  it('says unknown (no broker reached) without a broker, and still explains the value', async () => {
    const run = await inspect([
      '--file',
      file('v2-alone.bin', made.value),
      '--admin',
      `unix://${join(dir, 'none.sock')}`,
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^hsm .* unknown \(no broker reached\)$/m);
    assert.match(run.stdout, /^vault .* unknown \(no broker reached\)$/m);
    assert.match(run.stdout, /^no broker reached \(cannot reach the admin API/m);
  });

  it('reports a retired version as such, the others as unwrappable', async () => {
    const admin = ['--config', config.path];
    assert.equal((await runCli(['rotate', 'hsm', ...admin])).code, 0);
    const retire = await runCli(['retire', 'hsm', '1', '--force', ...admin]);
    assert.equal(retire.code, 0, retire.stderr);
    const run = await inspect(['--file', file('v2-retired.bin', made.value), ...admin, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const explained = JSON.parse(run.stdout) as Explanation;
    const wraps = explained.broker?.owner === 'broker' ? explained.broker.wraps : [];
    assert.deepEqual(
      wraps.map(wrap => [wrap.backend, wrap.unwrap]),
      [
        ['hsm', { now: 'no', reason: 'version retired; kms-broker restore undoes it' }],
        ['vault', { now: 'yes' }],
      ],
    );
    const human = await inspect(['--file', file('v2-retired.bin', made.value), ...admin]);
    assert.match(human.stdout, /^hsm +1 .* no \(version retired/m);
  });

  it('explains aescbc, aesgcm, secretbox, identity and KMS v1 values', async () => {
    for (const kind of ['aescbc', 'aesgcm', 'secretbox'] as const) {
      const run = await inspect(['-', '--json'], localValue(kind, `${kind}-key`));
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(
        (({ format, keyName }) => ({ format, keyName }))(JSON.parse(run.stdout) as Explanation),
        { format: kind, keyName: `${kind}-key` },
      );
    }
    const plain = identityValue();
    const identity = await inspect(['-'], plain);
    assert.equal(identity.code, 0, identity.stderr);
    assert.match(identity.stdout, /^format: +identity: stored in plain text$/m);
    assertAbsent(identity, plain.subarray(4));

    const v1 = await inspect(
      ['-', '--admin', `unix://${join(dir, 'none.sock')}`],
      brokerV1Value([{ backend: 'hsm', version: '2' }]),
    );
    assert.equal(v1.code, 0, v1.stderr);
    assert.match(v1.stdout, /^format: +KMS v1 \(k8s:enc:kms:v1\)$/m);
    assert.match(v1.stdout, /^hsm +2 +aes-gcm +ciphertext +60 bytes +unknown \(no broker reached\)$/m);
  });

  it('says why bytes are no stored value (exit 1), and refuses unclear sources (exit 2)', async () => {
    const empty = await inspect(['--file', file('empty.bin', Buffer.alloc(0))]);
    assert.equal(empty.code, 1);
    assert.match(empty.stdout, /^problem: +not a value kube-apiserver stored: it is empty\./m);
    const garbage = await inspect(['-', '--json'], randomBytes(64));
    assert.equal(garbage.code, 1);
    assert.match(
      (JSON.parse(garbage.stdout) as Explanation).problem ?? '',
      /^not a value kube-apiserver stored/,
    );
    const badV2 = await inspect(['-'], Buffer.from('k8s:enc:kms:v2:kms-broker:\xff\xff\xff', 'latin1'));
    assert.equal(badV2.code, 1);
    assert.match(badV2.stdout, /no KMS v2 EncryptedObject/);
    const missingFile = await inspect(['--file', join(dir, 'absent.bin')]);
    assert.equal(missingFile.code, 1);
    assert.match(missingFile.stderr, /INPUT_UNREADABLE: cannot read .*absent\.bin \(ENOENT\)/);
    for (const args of [[], ['-', '--file', join(dir, 'empty.bin')], ['stdin']]) {
      const run = await inspect(args, Buffer.alloc(0));
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
    }
  });

  it('printed no plaintext and no wrapped bytes in any run', () => {
    assert.ok(outputs.length > 15);
    for (const run of outputs) for (const secret of made.secrets) assertAbsent(run, secret);
  });
});

/** Neither the bytes nor their hex, base64 or text form appear in the output. */
function assertAbsent(run: CliRun, secret: Buffer): void {
  const text = run.stdout + run.stderr;
  for (const form of [
    secret.toString('hex'),
    secret.toString('base64'),
    secret.toString('base64url'),
    secret.toString('latin1'),
  ])
    assert.ok(!text.includes(form), `output carries secret bytes: ${form.slice(0, 16)}...`);
}
