// The read commands' output: -o table|wide|json|yaml, kubectl's relative ages, and tables that
// fit an 80-column terminal by default (wide may be wider) with realistic worst-case answers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import type { ClusterView } from '../../src/broker/ports.ts';
import { clusterText } from '../../src/cli/cluster-status.ts';
import { age, documentOf, duration, formatOf } from '../../src/cli/output.ts';
import { printable, type ReadView } from '../../src/cli/read-view.ts';
import {
  backendsListing,
  keysListing,
  render,
  statusListing,
  type BackendsBody,
  type KeysBody,
  type StatusBody,
} from '../../src/cli/views.ts';

const NOW = Date.parse('2026-12-07T12:00:00.000Z');
const ago = (ms: number) => new Date(NOW - ms).toISOString();
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A key_id as the broker derives it: 48 characters. */
const KEY_ID = 'kbr1-0123456789abcdef0123456789abcdef0123456789ab'.slice(0, 48);
/** An Azure Key Vault key version: a 32-character id. */
const AZURE_VERSION = '5f0c7a1e9b2d4c3fa8e6d1b0c9e8f7a6';

const status: StatusBody = {
  keyId: KEY_ID,
  healthz: 'ok',
  kmsApiVersion: 'v2',
  writeVersions: { 'hsm-a': '12', 'vault-east': '3', azure: AZURE_VERSION },
  failover: { order: ['hsm-a', 'vault-east', 'azure'], wrap: 'all' },
  degraded: ['vault-east'],
  underReplicatedKeyIds: [KEY_ID, KEY_ID.replace('0', '1'), KEY_ID.replace('0', '2')],
  uptimeSeconds: 3 * 86400 + 5,
  version: '0.1.0',
  cluster: { etcdReachable: false, converged: false, members: 3 },
};

const backends: BackendsBody = {
  backends: [
    {
      name: 'hsm-a',
      type: 'pkcs11',
      healthy: true,
      breaker: 'closed',
      lastProbeAt: ago(4 * SECOND),
      lastProbeMs: 12,
      errors: {},
      writeVersion: '12',
    },
    {
      name: 'vault-east',
      type: 'vault-transit',
      healthy: false,
      breaker: 'half-open',
      reason: 'BACKEND_UNAVAILABLE: connect ECONNREFUSED 10.0.0.7:8200 after 3 attempts',
      lastProbeAt: ago(2 * MINUTE),
      lastProbeMs: 2999,
      errors: { BACKEND_UNAVAILABLE: 1234, BACKEND_TIMEOUT: 56, BACKEND_AUTH_FAILED: 7 },
      writeVersion: '3',
    },
    {
      name: 'azure-kv-prod-we',
      type: 'azure-keyvault',
      healthy: true,
      breaker: 'closed',
      lastProbeAt: ago(3 * HOUR),
      lastProbeMs: 140,
      errors: {},
      writeVersion: AZURE_VERSION,
    },
  ],
};

const keys: KeysBody = {
  backends: {
    'hsm-a': [
      {
        version: '11',
        role: 'retired',
        createdAt: ago(400 * DAY),
        decryptCount: 123456789,
        decryptsSinceStart: 0,
      },
      {
        version: '12',
        role: 'write',
        createdAt: ago(4 * DAY),
        lastDecryptAt: ago(30 * SECOND),
        decryptCount: 42,
        decryptsSinceStart: 42,
      },
    ],
    'azure-kv-prod-we': [
      {
        version: AZURE_VERSION,
        role: 'write',
        createdAt: ago(5 * HOUR),
        lastDecryptAt: ago(59 * MINUTE),
        decryptCount: 7,
        decryptsSinceStart: 7,
      },
    ],
  },
};

const cluster: ClusterView = {
  name: 'prod-control-plane',
  prefix: '/kms-broker/prod/',
  node: 'control-plane-1',
  keyId: KEY_ID,
  converged: false,
  disagreeingSince: ago(90 * SECOND),
  etcd: { reachable: false, lastContactAt: ago(45 * SECOND) },
  proposal: {
    keyId: KEY_ID.replace('0', '9'),
    node: 'control-plane-2',
    proposedAt: ago(20 * SECOND),
    confirmedBy: ['control-plane-1', 'control-plane-2'],
  },
  members: [
    {
      node: 'control-plane-1',
      self: true,
      keyId: KEY_ID,
      unwrappable: [
        { backend: 'hsm-a', version: '12' },
        { backend: 'vault', version: '3' },
      ],
      lastSeenAt: ago(2 * SECOND),
      version: '0.1.0',
    },
    {
      node: 'control-plane-2',
      self: false,
      keyId: KEY_ID.replace('0', '9'),
      unwrappable: [{ backend: 'hsm-a', version: '12' }],
      lastSeenAt: ago(3 * MINUTE),
      version: '0.1.0',
    },
  ],
};

function widest(text: string): number {
  return Math.max(...text.split('\n').map(line => [...line].length));
}

describe('relative ages, as kubectl prints them', () => {
  it('counts seconds, minutes, hours, days and years, rounding down', () => {
    const cases: [number, string][] = [
      [0, '0s'],
      [5 * SECOND + 999, '5s'],
      [59 * SECOND, '59s'],
      [3 * MINUTE, '3m'],
      [59 * MINUTE + 59 * SECOND, '59m'],
      [2 * HOUR, '2h'],
      [23 * HOUR, '23h'],
      [4 * DAY, '4d'],
      [364 * DAY, '364d'],
      [800 * DAY, '2y'],
    ];
    for (const [ms, expected] of cases) assert.equal(duration(ms), expected, `${ms} ms`);
  });

  it('reads a timestamp against now; none is "-", a slight clock skew is 0s', () => {
    assert.equal(age(ago(3 * HOUR), NOW), '3h');
    assert.equal(age(undefined, NOW), '-');
    assert.equal(age(new Date(NOW + 500).toISOString(), NOW), '0s');
    assert.equal(age('not a time', NOW), '?');
  });
});

describe('-o and --json', () => {
  it('defaults to a table, and --json stays the alias of -o json', () => {
    assert.equal(formatOf({}), 'table');
    assert.equal(formatOf({ output: 'wide' }), 'wide');
    assert.equal(formatOf({ json: true }), 'json');
    assert.equal(formatOf({ output: 'yaml' }), 'yaml');
  });

  it('prints JSON and YAML documents with full timestamps, the same data both ways', async () => {
    const view: ReadView<KeysBody> = { name: 'keys', path: '/v1/keys', listing: keysListing };
    const json = await printable(view, keys, 'json', NOW);
    const yaml = await printable(view, keys, 'yaml', NOW);
    assert.deepEqual(JSON.parse(json), keys);
    assert.deepEqual(parseYaml(yaml), keys);
    assert.match(yaml, /createdAt: ['"]?2026-12-03T12:00:00\.000Z/);
    assert.equal(await documentOf('json', { a: 1 }), '{\n  "a": 1\n}\n');
  });
});

describe('tables', () => {
  const context = { wide: false, now: NOW };
  const wide = { wide: true, now: NOW };

  it('show relative ages by default and full timestamps in wide', () => {
    const table = render(keysListing(keys, context));
    assert.match(table, /^BACKEND\s+VERSION\s+ROLE\s+AGE\s+LAST DECRYPT\s+DECRYPTS$/m);
    assert.match(table, /^hsm-a\s+12\s+write\s+4d\s+30s ago\s+42$/m);
    assert.match(table, /^hsm-a\s+11\s+retired\s+1y\s+-\s+123456789$/m);
    const full = render(keysListing(keys, wide));
    assert.match(
      full,
      /^hsm-a\s+12\s+write\s+2026-12-03T12:00:00\.000Z\s+2026-12-07T11:59:30\.000Z\s+42\s+42$/m,
    );
    assert.ok(full.includes(AZURE_VERSION), 'wide shows the whole Azure version');

    const probes = render(backendsListing(backends, context));
    assert.match(probes, /^NAME\s+TYPE\s+HEALTH\s+BREAKER\s+WRITE\s+PROBED\s+ERRORS$/m);
    assert.match(probes, /^vault-east\s+vault-transit\s+unhealthy\s+half-open\s+3\s+2m\s+1297$/m);
    const probesWide = render(backendsListing(backends, wide));
    assert.match(probesWide, /LAST PROBE\s+LATENCY\s+ERRORS\s+REASON$/m);
    assert.match(probesWide, /\s2999ms\s/);
    assert.ok(probesWide.includes('BACKEND_UNAVAILABLE=1234 BACKEND_TIMEOUT=56 BACKEND_AUTH_FAILED=7'));
    assert.ok(probesWide.includes('connect ECONNREFUSED 10.0.0.7:8200'));

    assert.match(render(statusListing(status, context)), /^uptime\s+3d$/m);
    assert.match(
      render(statusListing(status, wide)),
      /^uptime\s+259205s \(since 2026-12-04T11:59:55\.000Z\)$/m,
    );
  });

  // Backend names of up to 16 characters (azure-kv-prod-we); longer ones widen the table, as a
  // long pod name does kubectl's: a name is typed into commands, so it is never shortened.
  it('fit 80 columns by default, for status, backends, keys and status --cluster', () => {
    const tables = {
      status: render(statusListing(status, context)),
      backends: render(backendsListing(backends, context)),
      keys: render(keysListing(keys, context)),
      cluster: clusterText(cluster, context),
    };
    for (const [name, text] of Object.entries(tables))
      assert.ok(widest(text) <= 80, `${name} is ${widest(text)} columns wide:\n${text}`);
    // The worst cases above are real: wide shows what the default leaves out, past 80 columns.
    assert.ok(widest(render(backendsListing(backends, wide))) > 80);
    assert.ok(widest(render(statusListing(status, wide))) > 80);
    assert.ok(widest(clusterText(cluster, wide)) > 80);
  });

  it('say in the default table where the rest is: several thin seeds, a shortened version', () => {
    const text = render(statusListing(status, context));
    assert.match(text, /^under-replicated\s+3 seeds \(-o wide\)$/m);
    assert.match(text, /azure=5f0c7a1…/);
  });

  it('mark each row with its content without the clock, so that --watch sees changes only', () => {
    const stable = (now: number) =>
      backendsListing(backends, { wide: false, now }).rows.map(row => row.stable);
    assert.deepEqual(stable(NOW), stable(NOW + 5 * MINUTE));
    const changed = structuredClone(backends);
    changed.backends[0]!.writeVersion = '13';
    assert.notDeepEqual(
      backendsListing(changed, context).rows.map(row => row.stable),
      stable(NOW),
    );
    const uptime = statusListing(status, context).rows.find(row => row.cells[0] === 'uptime');
    assert.equal(uptime?.stable, undefined);
  });
});
