// The drill over an in-memory etcd and in-memory backends: what each backend alone recovers,
// what only it recovers, what nothing recovers; one unwrap per seed and source, not per value;
// every value decrypted with --full; the state file resumes an interrupted drill to the same
// tallies, and refuses a state of other data.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { bindingFor, encodeEnvelope, headerAad, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { startDeadline } from '../../src/deadline.ts';
import { readState } from '../../src/recovery/drill-state.ts';
import { runDrill } from '../../src/recovery/drill.ts';
import { drillReport, reportSections } from '../../src/recovery/drill-report.ts';
import { ESCROW_MECHANISM, sealToEscrow } from '../../src/escrow/hybrid-wrap.ts';
import { fingerprint, generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { SeedUnwrapper, type Sources } from '../../src/recovery/seed-sources.ts';
import { readValue, type BrokerValue } from '../../src/recovery/stored-value.ts';
import type { EtcdClient, RangeResponse } from '../../src/usage/etcd-client.ts';
import { kdfEncrypt } from '../helpers/kube-encrypt.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { identityValue, kmsV2Value } from '../helpers/stored-values.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmsb-drill-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** An etcd holding `kvs` at revision 7; `failAfter` pages, it fails (an interrupted drill). */
function fakeEtcd(kvs: readonly { key: Buffer; value: Buffer }[], failAfter = Infinity): EtcdClient {
  let pages = 0;
  return {
    range(request): Promise<RangeResponse> {
      if (pages++ >= failAfter) return Promise.reject(new Error('connection lost'));
      const inRange = kvs.filter(
        kv => Buffer.compare(kv.key, request.key) >= 0 && Buffer.compare(kv.key, request.rangeEnd) < 0,
      );
      const page = inRange.slice(0, request.limit);
      return Promise.resolve({
        revision: '7',
        count: inRange.length,
        more: inRange.length > page.length,
        kvs: page,
      });
    },
    close: () => undefined,
  };
}

interface Wrapped {
  readonly seed: Buffer;
  readonly ciphertext: Buffer;
  readonly annotations: Record<string, Buffer>;
}

/** One Encrypt of `seed`: wrapped by each of `wraps` ([backend, version]), bound together as the broker binds them. */
async function encrypt(seed: Buffer, wraps: readonly [MemoryBackend, string][]): Promise<Wrapped> {
  const binding = bindingFor(seed);
  const envelopes = await Promise.all(
    wraps.map(async ([backend, version]) => {
      const aad = headerAad({
        backend: backend.name,
        keyVersion: version,
        mechanism: backend.mechanism,
        binding,
      });
      const deadline = startDeadline(5000);
      return encodeEnvelope(aad, await backend.wrap({ plaintext: seed, keyVersion: version, aad, deadline }));
    }),
  );
  const [first, ...others] = envelopes;
  const annotations = Object.fromEntries(
    others.map((envelope, i) => [`${wraps[i + 1]?.[0].name}${WRAP_ANNOTATION_SUFFIX}`, envelope]),
  );
  return { seed, ciphertext: first as Buffer, annotations };
}

/** A value the apiserver wrote under the seed of `wrapped` (one seed serves many writes). */
function value(key: string, { seed, ciphertext, annotations }: Wrapped) {
  const encryptedData = kdfEncrypt(seed, Buffer.from(`object ${key}`), key);
  return {
    key: Buffer.from(key),
    value: kmsV2Value('kms-broker', { keyId: 'kbr1-test', ciphertext, annotations, encryptedData }),
  };
}

async function cluster() {
  const a = new MemoryBackend({ name: 'a', versions: 1 });
  const b = new MemoryBackend({ name: 'b', versions: 2 });
  const both = await encrypt(randomBytes(32), [
    [a, '1'],
    [b, '1'],
  ]);
  const onlyA = await encrypt(randomBytes(32), [[a, '1']]);
  const lost = await encrypt(randomBytes(32), [[b, '2']]);
  const kvs = [
    ...[1, 2, 3].map(i => value(`/registry/secrets/ns/both-${i}`, both)),
    ...[1, 2].map(i => value(`/registry/secrets/ns/only-a-${i}`, onlyA)),
    value('/registry/secrets/ns/lost', lost),
    { key: Buffer.from('/registry/configmaps/ns/plain'), value: identityValue() },
  ].sort((x, y) => Buffer.compare(x.key, y.key));
  b.deleteVersion('2'); // the version that alone wrapped `lost` is gone
  const sources: Sources = {
    backends: new Map([
      ['a', { backend: a }],
      ['b', { backend: b }],
    ]),
    close: () => Promise.resolve(),
  };
  return { a, b, kvs, sources };
}

const options = (statePath?: string) => ({
  prefix: '/registry/',
  rate: 1e9,
  pageSize: 2,
  full: true,
  sample: 0,
  source: { data: 'snapshot sha256:abc', prefix: '/registry/' },
  statePath,
});

describe('recovery: the drill', () => {
  it('says what each backend alone recovers, what only it does, and what nothing does; one unwrap per seed', async () => {
    const { a, b, kvs, sources } = await cluster();
    const result = await runDrill(fakeEtcd(kvs), new SeedUnwrapper(sources), options());
    const { tally } = result;
    assert.equal(tally.values, 7);
    assert.equal(tally.ours, 6);
    assert.equal(tally.seeds, 3);
    assert.deepEqual(tally.recoverable, { a: 5, b: 3 });
    assert.deepEqual(tally.onlyBy.a, {
      count: 2,
      keys: ['/registry/secrets/ns/only-a-1', '/registry/secrets/ns/only-a-2'],
    });
    assert.deepEqual(tally.unrecoverable, { count: 1, keys: ['/registry/secrets/ns/lost'] });
    assert.equal(
      Object.values(tally.failures.b ?? {}).reduce((sum, n) => sum + n, 0),
      1,
    );
    assert.deepEqual(tally.decrypt, { decrypted: 5, failed: { count: 0, keys: [] } });
    // 6 values, 3 seeds: a unwraps 2 seeds, b 2 (one fails); nothing per value.
    assert.equal(a.calls.unwrap + b.calls.unwrap, 4);
    assert.equal(result.backendCalls, 4);

    const report = drillReport(result, sources, {
      data: 'snapshot sha256:abc',
      prefix: '/registry/',
      full: true,
    });
    assert.equal(report.allRecoverable, false);
    assert.equal(report.totals.notOurs, 1);
    assert.deepEqual(
      report.sources.map(row => [row.name, row.recovers, row.onlyIt.count]),
      [
        ['a', 5, 2],
        ['b', 3, 0],
      ],
    );
    const text = JSON.stringify(reportSections(report));
    assert.match(text, /Losing a would cost these 2 values/);
    assert.match(text, /secrets\/ns\/lost/);
  });

  it('resumes an interrupted drill from its state file (0600) to the same tallies, and refuses a state of other data', async () => {
    const { kvs, sources } = await cluster();
    const whole = await runDrill(fakeEtcd(kvs), new SeedUnwrapper(sources), options());
    const statePath = join(dir, 'state.json');
    await assert.rejects(
      runDrill(fakeEtcd(kvs, 2), new SeedUnwrapper(sources), options(statePath)),
      /connection lost/,
    );
    assert.equal(statSync(statePath).mode & 0o777, 0o600);
    const state = readState(statePath, options().source);
    assert.equal(state?.read, 4);
    assert.equal(state.lastKey, kvs[3]?.key.toString());
    assert.doesNotMatch(readFileSync(statePath, 'utf8'), /"seed"/);
    const resumed = await runDrill(fakeEtcd(kvs), new SeedUnwrapper(sources), {
      ...options(statePath),
      resume: state,
    });
    assert.equal(resumed.resumed, true);
    assert.deepEqual(resumed.tally, whole.tally);
    assert.equal(readState(statePath, options().source), undefined, 'a finished drill starts over');
    assert.throws(
      () => readState(statePath, { data: 'snapshot sha256:def', prefix: '/registry/' }),
      /DRILL_STATE_INVALID|belongs to a drill of snapshot sha256:abc/,
    );
  });

  it('opens escrow wraps with the rebuilt key, and names an escrow key that was not given', async () => {
    const a = new MemoryBackend({ name: 'a', versions: 1 });
    const given = generateEscrowKeyPair();
    const other = generateEscrowKeyPair();
    const seed = randomBytes(32);
    const wrapped = await encrypt(seed, [[a, '1']]);
    const { binding } = readV2(value('/registry/secrets/ns/x', wrapped)).wraps[0]?.header ?? {};
    const escrowWrap = (key: typeof given) => {
      const aad = headerAad({
        backend: 'escrow',
        keyVersion: fingerprint(key.publicKey),
        mechanism: ESCROW_MECHANISM,
        binding,
      });
      return encodeEnvelope(aad, sealToEscrow(key.publicKey, seed, aad));
    };
    const sources: Sources = {
      backends: new Map(),
      escrow: { privateKey: given.privateKey, fingerprint: fingerprint(given.publicKey) },
      close: () => Promise.resolve(),
    };
    const unwrapper = new SeedUnwrapper(sources);
    const withEscrow = (key: typeof given, name: string) =>
      readV2(
        value(name, { ...wrapped, annotations: { [`escrow${WRAP_ANNOTATION_SUFFIX}`]: escrowWrap(key) } }),
      );
    const opened = await unwrapper.outcome(withEscrow(given, '/registry/secrets/ns/given'));
    assert.deepEqual(opened.outcome.recoveredBy, ['escrow']);
    assert.deepEqual(opened.outcome.seed, seed);
    const notGiven = await unwrapper.outcome({
      ...withEscrow(other, '/registry/secrets/ns/other'),
      seedId: 'another',
    });
    assert.deepEqual(notGiven.outcome.recoveredBy, []);
    assert.deepEqual(
      notGiven.outcome.failures.map(failure => failure.reason),
      ["backend 'a' is not in the config", `escrow key ${fingerprint(other.publicKey)} not given`],
    );
  });
});

function readV2({ value: stored }: { value: Buffer }): BrokerValue {
  const parsed = readValue(stored);
  assert.ok(parsed.kind === 'kms-v2');
  return parsed;
}
