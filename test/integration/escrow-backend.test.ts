// The escrow backend in a real broker process on SoftHSM, with a key pair from a real
// `kms-broker escrow init`: every seed of `wrap: all` and `wrap: first` carries an escrow wrap
// that the shares (and nothing online) open to that seed; a replaced escrow key is adopted
// at restart with a new key_id while older data still reads; a key file that is not one
// stops the start with exit 4, naming the key.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeEnvelope, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { ESCROW_MECHANISM, openFromEscrow } from '../../src/escrow/hybrid-wrap.ts';
import { parsePublicKeyFile, type EscrowPrivateKey } from '../../src/escrow/key-files.ts';
import { parseShare } from '../../src/escrow/share-format.ts';
import { combineShares } from '../../src/escrow/shares.ts';
import { createKmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { spawnBroker, startBrokerProcess } from '../helpers/broker-process.ts';
import { runCli } from '../helpers/cli-run.ts';
import { escrowBackend, pkcs11Backend, writeConfig } from '../helpers/config.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const ESCROW = `escrow${WRAP_ANNOTATION_SUFFIX}`;

interface Ceremony {
  readonly publicKeyFile: string;
  readonly fingerprint: string;
  readonly privateKey: EscrowPrivateKey;
}

/** `kms-broker escrow init` 3-of-5, and the private key rebuilt from shares 2, 4 and 5. */
async function ceremony(root: string, name: string): Promise<Ceremony> {
  const out = join(root, name);
  const run = await runCli(['escrow', 'init', '--out', out, '--shares', '5', '--threshold', '3', '--json']);
  assert.equal(run.code, 0, run.stderr);
  const { fingerprint } = JSON.parse(run.stdout) as { fingerprint: string };
  const publicKeyFile = join(out, 'escrow-public.pem');
  const shares = [2, 4, 5].map(index => {
    const source = join(out, `share-${index}-of-5.txt`);
    return { source, share: parseShare(readFileSync(source, 'utf8').trim(), source) };
  });
  const publicKey = parsePublicKeyFile(readFileSync(publicKeyFile, 'utf8'), publicKeyFile);
  return { publicKeyFile, fingerprint, privateKey: await combineShares(shares, publicKey, publicKeyFile) };
}

describe('escrow backend in a broker process', () => {
  let root: string;
  let token: SoftHsmToken;
  let first: Ceremony;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'kmsb-escrow-'));
    token = createToken();
    addToken(token, 'second', '13579');
    writeFileSync(`${token.dir}/second-pin`, '13579');
    first = await ceremony(root, 'first');
  });
  after(() => {
    token.remove();
    rmSync(root, { recursive: true, force: true });
  });

  const hsm2 = () =>
    pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'second', pinFile: `${token.dir}/second-pin` });

  for (const wrap of ['all', 'first'] as const) {
    it(`wrap: ${wrap}: each seed's escrow wrap opens with the shares to that seed, and only there`, async () => {
      const config = writeConfig(token, {
        backends: [pkcs11Backend(token), hsm2(), escrowBackend(first.publicKeyFile)],
        failover: { order: ['hsm', 'escrow', 'hsm2'], wrap },
      });
      const broker = await startBrokerProcess(config.path, token.env);
      const client = createKmsV2Client(config.socket);
      try {
        const seeds = [randomBytes(32), randomBytes(32)];
        for (const seed of seeds) {
          const sealed = await client.encrypt(seed);
          assert.equal(decodeEnvelope(sealed.ciphertext).header.backend, 'hsm');
          const expected = wrap === 'all' ? [ESCROW, `hsm2${WRAP_ANNOTATION_SUFFIX}`] : [ESCROW];
          assert.deepEqual(Object.keys(sealed.annotations).sort(), expected);
          const escrowWrap = decodeEnvelope(sealed.annotations[ESCROW] as Buffer);
          assert.deepEqual(
            [escrowWrap.header.mechanism, escrowWrap.header.keyVersion],
            [ESCROW_MECHANISM, first.fingerprint],
          );
          assert.ok(openFromEscrow(first.privateKey, escrowWrap.wrapped, escrowWrap.aad).equals(seed));
          assert.ok((await client.decrypt(sealed)).plaintext.equals(seed));
        }
        assert.equal((await client.status()).healthz, 'ok');
      } finally {
        client.close();
        await broker.stop();
      }
    });
  }

  it('rotates the first backend with keys of its own when the order starts with the escrow, and refuses the escrow', async () => {
    const config = writeConfig(token, {
      backends: [pkcs11Backend(token), escrowBackend(first.publicKeyFile)],
      failover: { order: ['escrow', 'hsm'], wrap: 'all' },
    });
    const broker = await startBrokerProcess(config.path, token.env);
    try {
      const rotated = await runCli(['rotate', '--json', '--config', config.path]);
      assert.equal(rotated.code, 0, rotated.stderr);
      assert.equal((JSON.parse(rotated.stdout) as { backend: string }).backend, 'hsm');
      const refused = await runCli(['rotate', 'escrow', '--config', config.path]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        /ESCROW_WRITE_ONLY: backend escrow is an escrow key, made offline: run `kms-broker escrow init`/,
      );
    } finally {
      await broker.stop();
    }
  });

  it('adopts a replaced escrow key at restart with a new key_id; data written before still reads', async () => {
    const config = writeConfig(token, {
      backends: [pkcs11Backend(token), escrowBackend(first.publicKeyFile)],
      failover: { order: ['hsm', 'escrow'], wrap: 'all' },
    });
    let broker = await startBrokerProcess(config.path, token.env);
    let client = createKmsV2Client(config.socket);
    const seed = randomBytes(32);
    const before = await client.encrypt(seed);
    client.close();
    await broker.stop();

    const second = await ceremony(root, 'second');
    const values = structuredClone(config.values) as { backends: Record<string, unknown>[] };
    values.backends = [pkcs11Backend(token), escrowBackend(second.publicKeyFile)];
    writeConfig(token, values, config.dir);
    broker = await startBrokerProcess(config.path, token.env);
    client = createKmsV2Client(config.socket);
    try {
      const after = await client.encrypt(randomBytes(32));
      assert.notEqual(after.key_id, before.key_id);
      assert.equal(decodeEnvelope(after.annotations[ESCROW] as Buffer).header.keyVersion, second.fingerprint);
      assert.ok((await client.decrypt(before)).plaintext.equals(seed));
    } finally {
      client.close();
      await broker.stop();
    }
  });

  it('stops the start with exit 4 on an escrow key file that is not one, naming the key and the fix', async () => {
    const bad = join(root, 'not-escrow.pem');
    writeFileSync(
      bad,
      readFileSync(first.publicKeyFile, 'utf8').split('-----END PUBLIC KEY-----')[0] +
        '-----END PUBLIC KEY-----\n',
    );
    const config = writeConfig(token, {
      backends: [pkcs11Backend(token), escrowBackend(bad)],
      failover: { order: ['hsm', 'escrow'], wrap: 'all' },
    });
    const broker = spawnBroker(config.path, token.env);
    assert.equal(await broker.exited, 4);
    assert.match(
      [...broker.text, ...broker.logs.map(record => String(record.msg))].join('\n'),
      /backends\[1\]\.publicKeyFile: .*not-escrow\.pem lacks its x25519 PUBLIC KEY block; write an escrow public key/,
    );
  });
});
