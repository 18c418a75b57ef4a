// The broker's metrics follow Prometheus' conventions: standard process names, a build_info,
// timestamps instead of ages, one series per state, base units and `_total` counters; and the
// gauges read at scrape time say what the broker's sources say.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Metrics } from '../../src/metrics/metrics.ts';
import { buildCommit } from '../../src/metrics/build-info.ts';
import { VERSION } from '../../src/version.ts';

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The samples of a text exposition (no escaped quotes occur in these tests' labels). */
function samples(text: string): Sample[] {
  const found: Sample[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g))
      labels[pair[1] as string] = pair[2] as string;
    found.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return found;
}

function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples(text).find(
    sample =>
      sample.name === name &&
      Object.keys(sample.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([key, want]) => sample.labels[key] === want),
  )?.value;
}

const COMMIT = 'a'.repeat(40);

describe('metrics', () => {
  it('serves process and Node.js metrics under their standard names, without the kms_broker_ prefix', async () => {
    const text = await new Metrics({ defaultMetrics: true }).text();
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
    ])
      assert.match(text, new RegExp(`^${name} `, 'm'), name);
    assert.doesNotMatch(text, /^kms_broker_(process|nodejs)_/m);
  });

  it('labels kms_broker_build_info with the version, the Node.js version and the commit when known', async () => {
    const build = samples(await new Metrics().text()).find(sample => sample.name === 'kms_broker_build_info');
    assert.equal(build?.value, 1);
    assert.equal(build.labels.version, VERSION);
    assert.equal(build.labels.nodejs_version, process.version);
    // This test runs from a git checkout, so the commit is read from it.
    assert.match(build.labels.commit ?? '', /^[0-9a-f]{40}$/);
  });

  it('exports the breaker state as one series per state, 1 for the current one', async () => {
    const metrics = new Metrics();
    metrics.breakerState('hsm', 'closed');
    metrics.breakerState('hsm', 'open');
    const text = await metrics.text();
    const state = (name: string) =>
      value(text, 'kms_broker_backend_breaker_state', { backend: 'hsm', state: name });
    assert.deepEqual([state('closed'), state('half-open'), state('open')], [0, 0, 1]);
  });

  it('keeps the last successful probe as a Unix timestamp, and up as the last probe outcome', async () => {
    const metrics = new Metrics();
    metrics.probed('hsm', true, 1_700_000_000_500);
    metrics.probed('hsm', false, 1_700_000_060_000);
    const text = await metrics.text();
    assert.equal(
      value(text, 'kms_broker_backend_probe_last_success_timestamp_seconds', { backend: 'hsm' }),
      1_700_000_000.5,
    );
    assert.equal(value(text, 'kms_broker_backend_up', { backend: 'hsm' }), 0);
    assert.doesNotMatch(text, /seconds_since/);
  });

  it('reads Status health and thin seeds from the broker at scrape time', async () => {
    const metrics = new Metrics();
    let status = { keyId: 'kbr1-b', healthz: 'ok', underReplicatedKeyIds: ['kbr1-a'] };
    metrics.statusFrom(() => status);
    let text = await metrics.text();
    assert.equal(value(text, 'kms_broker_status_healthy'), 1);
    assert.equal(value(text, 'kms_broker_thin_seeds'), 1);
    assert.equal(value(text, 'kms_broker_current_seed_thin'), 0);
    status = {
      keyId: 'kbr1-b',
      healthz: 'unhealthy backends: hsm (CKR_DEVICE_ERROR)',
      underReplicatedKeyIds: ['kbr1-a', 'kbr1-b'],
    };
    text = await metrics.text();
    assert.equal(value(text, 'kms_broker_status_healthy'), 0);
    assert.equal(value(text, 'kms_broker_thin_seeds'), 2);
    assert.equal(value(text, 'kms_broker_current_seed_thin'), 1);
    assert.doesNotMatch(text, /kbr1-|CKR_/, 'no key_id and no reason text in the exposition');
  });

  it('exports the rotation stage and each old version with its stage and when it stopped writing', async () => {
    const metrics = new Metrics();
    metrics.rotationFrom(() => ({
      stage: 'needed',
      lastScan: { scannedAt: '2026-12-01T00:00:10.000Z' },
      versions: [
        {
          backend: 'hsm',
          version: '1',
          stage: 'needed',
          writeEndedAt: '2026-12-01T00:00:00.000Z',
          neededBy: { objects: 7 },
        },
        { backend: 'hsm', version: '2', stage: 're-seeding', writeEndedAt: '2026-12-02T00:00:00.000Z' },
      ],
    }));
    const text = await metrics.text();
    assert.equal(value(text, 'kms_broker_rotation_stage', { stage: 'needed' }), 1);
    assert.equal(value(text, 'kms_broker_rotation_stage', { stage: 'steady' }), 0);
    const stage = (version: string, name: string) =>
      value(text, 'kms_broker_old_key_version_stage', { backend: 'hsm', version, stage: name });
    assert.deepEqual([stage('1', 'needed'), stage('1', 'retirable'), stage('2', 're-seeding')], [1, 0, 1]);
    assert.equal(stage('1', 'steady'), undefined, 'steady is the whole rotation, never one version');
    const ended = Date.parse('2026-12-01T00:00:00.000Z') / 1000;
    assert.equal(
      value(text, 'kms_broker_old_key_version_write_ended_timestamp_seconds', {
        backend: 'hsm',
        version: '1',
      }),
      ended,
    );
    assert.equal(
      value(text, 'kms_broker_old_key_version_needed_objects', { backend: 'hsm', version: '1' }),
      7,
    );
    assert.equal(
      value(text, 'kms_broker_old_key_version_needed_objects', { backend: 'hsm', version: '2' }),
      -1,
    );
    assert.equal(value(text, 'kms_broker_usage_scan_timestamp_seconds'), ended + 10);
  });

  it('names counters *_total, histograms and timestamps in seconds, and has no age gauges', async () => {
    const metrics = new Metrics({ defaultMetrics: true });
    for (const metric of await metrics.registry.getMetricsAsJSON()) {
      if (!metric.name.startsWith('kms_broker_')) continue;
      if (String(metric.type) === 'counter') assert.match(metric.name, /_total$/, metric.name);
      if (String(metric.type) === 'histogram') assert.match(metric.name, /_seconds$/, metric.name);
      if (/timestamp/.test(metric.name)) assert.match(metric.name, /_timestamp_seconds$/, metric.name);
      assert.doesNotMatch(metric.name, /since/, metric.name);
    }
  });
});

describe('the build commit', () => {
  const checkout = (files: Record<string, string>) => {
    const root = mkdtempSync(join(tmpdir(), 'kmsb-git-'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return root;
  };

  it('is KMS_BROKER_COMMIT when the image build set it, and nothing when that is not a commit id', () => {
    assert.equal(
      buildCommit({ KMS_BROKER_COMMIT: COMMIT.toUpperCase() }, new URL('file:///nonexistent/')),
      COMMIT,
    );
    assert.equal(
      buildCommit({ KMS_BROKER_COMMIT: 'main; rm -rf /' }, new URL('file:///nonexistent/')),
      undefined,
    );
  });

  it('is read from a checkout: a loose ref, a packed ref, a worktree, a detached HEAD; else unknown', () => {
    const roots = [
      checkout({ '.git/HEAD': 'ref: refs/heads/main\n', '.git/refs/heads/main': `${COMMIT}\n` }),
      checkout({
        '.git/HEAD': 'ref: refs/heads/main\n',
        '.git/packed-refs': `# pack-refs\n${COMMIT} refs/heads/main\n`,
      }),
      checkout({
        '.git': 'gitdir: common/worktrees/wt\n',
        'common/worktrees/wt/HEAD': 'ref: refs/heads/wt\n',
        'common/worktrees/wt/commondir': '../..\n',
        'common/refs/heads/wt': `${COMMIT}\n`,
      }),
      checkout({ '.git/HEAD': `${COMMIT}\n` }),
    ];
    const empty = checkout({});
    try {
      for (const root of roots) assert.equal(buildCommit({}, new URL(`file://${root}/`)), COMMIT, root);
      assert.equal(buildCommit({}, new URL(`file://${empty}/`)), undefined);
    } finally {
      for (const root of [...roots, empty]) rmSync(root, { recursive: true, force: true });
    }
  });
});
