// The admin HTTP API as an operator and a dashboard use it: real HTTP on the admin unix
// socket of a real `kms-broker serve` process on real SoftHSM tokens, cross-checked with the
// KMS v2 gRPC socket the apiserver uses. Audit records are read from the broker's JSON log.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { stringify } from 'yaml';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { errorCatalog } from '../../src/errors.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient, problem, type AdminClient, type AdminResponse } from '../helpers/admin-http.ts';
import {
  spawnBroker,
  startBrokerProcess,
  type BrokerProcess,
  type LogRecord,
} from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { until } from '../helpers/fault-injection.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { recordScan, usageScan } from '../helpers/usage-scans.ts';
import { createCa } from '../helpers/x509.ts';

// ---------------------------------------------------------------------------------------
// Response shapes and small helpers

interface Failover {
  order: string[];
  wrap: 'all' | 'first';
}

interface StatusBody {
  keyId: string;
  healthz: string;
  kmsApiVersion: string;
  writeVersions: Record<string, string>;
  failover: Failover;
  uptimeSeconds: number;
  version: string;
}

interface BackendView {
  name: string;
  type: string;
  healthy: boolean;
  breaker: string;
  errors: Record<string, number>;
  writeVersion?: string;
  lastProbeAt?: string;
}

interface VersionView {
  version: string;
  role: 'write' | 'active' | 'retired';
  createdAt: string;
  lastDecryptAt?: string;
  decryptCount: number;
  decryptsSinceStart: number;
}

interface KeysBody {
  backends: Record<string, VersionView[]>;
}

interface RotateBody {
  backend: string;
  version: string;
  keyId: string;
}

interface VersionStateBody {
  backend: string;
  version: string;
  state: 'active' | 'retired';
  forced: boolean;
}

/** The JSON body of a successful answer. */
function json<T>(response: AdminResponse, status = 200): T {
  assert.equal(response.status, status, `expected ${status}, got ${response.status}: ${response.text}`);
  assert.match(String(response.headers['content-type']), /^application\/json\b/);
  return response.body as T;
}

/** Starts `kms-broker serve` and resolves once both the KMS socket and the admin API serve. */
async function startServing(configPath: string, env: NodeJS.ProcessEnv): Promise<BrokerProcess> {
  const broker = await startBrokerProcess(configPath, env);
  try {
    await broker.waitForLog(record => record.msg === 'admin API listening');
  } catch (error) {
    await broker.stop('SIGKILL');
    throw error;
  }
  return broker;
}

/** The first audit record logged after `mark` (an index into the broker's log) that matches. */
function auditRecord(
  broker: BrokerProcess,
  mark: number,
  matches: (record: LogRecord) => boolean,
): Promise<LogRecord> {
  return broker.waitForLog(
    record => record.name === 'audit' && broker.logs.indexOf(record) >= mark && matches(record),
    5000,
  );
}

async function encryptOne(client: KmsV2Client) {
  const seed = randomBytes(32);
  const encrypted = await client.encrypt(seed);
  return { seed, ...encrypted, keyVersion: decodeEnvelope(encrypted.ciphertext).header.keyVersion };
}

async function decryptsTo(client: KmsV2Client, item: Awaited<ReturnType<typeof encryptOne>>) {
  const { plaintext } = await client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id });
  assert.deepEqual(plaintext, item.seed);
}

function roles(keys: KeysBody): Record<string, [string, string][]> {
  return Object.fromEntries(
    Object.entries(keys.backends).map(([backend, versions]) => [
      backend,
      versions.map(({ version, role }): [string, string] => [version, role]),
    ]),
  );
}

function roleOf(keys: KeysBody, backend: string, version: string): string | undefined {
  return keys.backends[backend]?.find(entry => entry.version === version)?.role;
}

function etagOf(response: AdminResponse): string {
  const etag = response.headers.etag;
  assert.equal(typeof etag, 'string', 'the response carries an ETag');
  assert.match(etag as string, /^"[^"]+"$/, 'a strong, quoted ETag');
  return etag as string;
}

function putFailover(admin: AdminClient, token: string, body: unknown, etag?: string) {
  return admin.request('/v1/failover', {
    method: 'PUT',
    token,
    body,
    ...(etag !== undefined && { headers: { 'if-match': etag } }),
  });
}

// ---------------------------------------------------------------------------------------
// A strict reader of the Prometheus text exposition format (version 0.0.4)

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Exposition {
  /** Metric family name to its TYPE. */
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
}

const METRIC_TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
// Prometheus reads sample values with Go's strconv.ParseFloat, which takes NaN in any case:
// prom-client writes `Nan` for an event-loop gauge scraped twice within one sampling interval.
const NUMBER = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|[Nn][Aa][Nn])$/;

function familyOf(name: string, types: ReadonlyMap<string, string>): string | undefined {
  const exact = types.get(name);
  if (exact !== undefined && exact !== 'histogram') return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const type = types.get(base);
    if (type === 'histogram' || (type === 'summary' && suffix !== '_bucket')) return base;
  }
  return undefined;
}

function parseNumber(text: string, where: string): number {
  assert.match(text, NUMBER, `${where}: ${text} is not a number`);
  if (/Inf$/.test(text)) return text.startsWith('-') ? -Infinity : Infinity;
  return Number(text);
}

function parseSample(line: string, where: string): Sample {
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0];
  assert.ok(name !== undefined, `${where}: no metric name`);
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1);
    while (!rest.startsWith('}')) {
      const label = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(rest)?.[0];
      assert.ok(label !== undefined, `${where}: no label name at ${JSON.stringify(rest)}`);
      assert.ok(!label.startsWith('__'), `${where}: label ${label} is reserved`);
      rest = rest.slice(label.length);
      assert.ok(rest.startsWith('="'), `${where}: the value of label ${label} is not quoted`);
      rest = rest.slice(2);
      let value = '';
      for (;;) {
        const char = rest[0];
        assert.ok(char !== undefined, `${where}: unterminated value of label ${label}`);
        if (char === '"') break;
        if (char === '\\') {
          const escaped = rest[1];
          assert.ok(
            escaped === '\\' || escaped === '"' || escaped === 'n',
            `${where}: bad escape in label ${label}`,
          );
          value += escaped === 'n' ? '\n' : escaped;
          rest = rest.slice(2);
        } else {
          value += char;
          rest = rest.slice(1);
        }
      }
      rest = rest.slice(1);
      assert.ok(!(label in labels), `${where}: label ${label} appears twice`);
      labels[label] = value;
      if (rest.startsWith(',')) rest = rest.slice(1);
      else assert.ok(rest.startsWith('}'), `${where}: expected , or } after label ${label}`);
    }
    rest = rest.slice(1);
  }
  const fields = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?$/.exec(rest);
  assert.ok(fields !== null, `${where}: expected a value (and optional timestamp) after the name and labels`);
  return { name, labels, value: parseNumber(fields[1] as string, where) };
}

function labelKey(labels: Readonly<Record<string, string>>, without?: string): string {
  return JSON.stringify(
    Object.entries(labels)
      .filter(([name]) => name !== without)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const sampled = new Set<string>();
  const finished = new Set<string>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  let current: string | undefined;
  // All lines of a family are one group: a family never reappears after another began.
  const enter = (family: string, where: string) => {
    if (family === current) return;
    assert.ok(!finished.has(family), `${where}: the lines of ${family} are not grouped together`);
    if (current !== undefined) finished.add(current);
    current = family;
  };
  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, index) => {
      const where = `metrics line ${index + 1} ${JSON.stringify(line)}`;
      if (line.trim() === '') return;
      if (line.startsWith('#')) {
        const meta = /^#[ \t]+(HELP|TYPE)[ \t]+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:[ \t]+(.*))?$/.exec(line);
        if (meta === null) {
          assert.ok(!/^#[ \t]*(HELP|TYPE)\b/.test(line), `${where}: malformed HELP or TYPE line`);
          return; // a plain comment
        }
        const [, keyword, name = '', argument = ''] = meta;
        enter(name, where);
        if (keyword === 'HELP') {
          assert.ok(!helps.has(name), `${where}: second HELP for ${name}`);
          assert.match(argument, /^(?:[^\\]|\\[\\n])*$/, `${where}: bad escape in HELP`);
          helps.add(name);
        } else {
          assert.ok(METRIC_TYPES.has(argument), `${where}: unknown type ${argument}`);
          assert.ok(!types.has(name), `${where}: second TYPE for ${name}`);
          assert.ok(!sampled.has(name), `${where}: TYPE after samples of ${name}`);
          types.set(name, argument);
        }
        return;
      }
      const sample = parseSample(line, where);
      const family = familyOf(sample.name, types);
      assert.ok(family !== undefined, `${where}: no TYPE line declares the family of ${sample.name}`);
      enter(family, where);
      sampled.add(family);
      const key = `${sample.name}${labelKey(sample.labels)}`;
      assert.ok(!seen.has(key), `${where}: duplicate sample`);
      seen.add(key);
      const type = types.get(family);
      if (type === 'counter' || sample.name.endsWith('_count') || sample.name.endsWith('_bucket'))
        assert.ok(sample.value >= 0, `${where}: a counter is never negative`);
      if (sample.name.endsWith('_bucket') && type === 'histogram')
        assert.ok(sample.labels.le !== undefined, `${where}: a histogram bucket without le`);
      samples.push(sample);
    });
  checkHistograms({ types, samples });
  return { types, samples };
}

/** Buckets are cumulative and end in +Inf, which equals _count; _sum is present. */
function checkHistograms(exposition: Exposition): void {
  for (const [family, type] of exposition.types) {
    if (type !== 'histogram') continue;
    const series = new Map<string, { le: number; value: number }[]>();
    for (const sample of exposition.samples) {
      if (sample.name !== `${family}_bucket`) continue;
      const key = labelKey(sample.labels, 'le');
      const buckets = series.get(key) ?? [];
      buckets.push({ le: parseNumber(sample.labels.le ?? '', `${family} le`), value: sample.value });
      series.set(key, buckets);
    }
    for (const [key, buckets] of series) {
      buckets.sort((a, b) => a.le - b.le);
      buckets.forEach((bucket, index) => {
        if (index > 0)
          assert.ok(
            bucket.value >= (buckets[index - 1]?.value ?? 0),
            `${family}${key}: buckets not cumulative`,
          );
      });
      const last = buckets.at(-1);
      assert.equal(last?.le, Infinity, `${family}${key}: no +Inf bucket`);
      const count = exposition.samples.find(
        sample => sample.name === `${family}_count` && labelKey(sample.labels) === key,
      );
      assert.equal(count?.value, last.value, `${family}${key}: _count differs from the +Inf bucket`);
      assert.ok(
        exposition.samples.some(sample => sample.name === `${family}_sum` && labelKey(sample.labels) === key),
        `${family}${key}: no _sum`,
      );
    }
  }
}

function sampleValue(
  exposition: Exposition,
  name: string,
  labels: Readonly<Record<string, string>>,
): number | undefined {
  const key = labelKey(labels);
  return exposition.samples.find(sample => sample.name === name && labelKey(sample.labels) === key)?.value;
}

// ---------------------------------------------------------------------------------------
// OpenAPI document shapes

interface OpenApiOperation {
  responses?: Record<string, { description?: unknown; content?: Record<string, { schema?: unknown }> }>;
  parameters?: { in?: unknown; name?: unknown; required?: unknown; schema?: unknown }[];
  security?: Record<string, unknown>[];
  operationId?: string;
}

interface OpenApiDocument {
  openapi?: unknown;
  info?: { title?: unknown; version?: unknown };
  paths?: Record<string, Record<string, OpenApiOperation>>;
  components?: { securitySchemes?: Record<string, unknown> };
  security?: Record<string, unknown>[];
}

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

/** Every operation the admin API serves, as OpenAPI names it. */
const SERVED_OPERATIONS = [
  'GET /healthz',
  'GET /readyz',
  'GET /metrics',
  'GET /openapi.json',
  'GET /v1/status',
  'GET /v1/whoami',
  'GET /v1/backends',
  'GET /v1/keys',
  'POST /v1/backends/{name}/rotate',
  'POST /v1/backends/{name}/versions/{version}/retire',
  'POST /v1/backends/{name}/versions/{version}/restore',
  'GET /v1/failover',
  'PUT /v1/failover',
  'POST /v1/usage/scans',
  'GET /v1/usage',
  'GET /v1/rotation',
  'GET /v1/cluster',
];

function operations(document: OpenApiDocument): [string, string, OpenApiOperation][] {
  return Object.entries(document.paths ?? {}).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => HTTP_METHODS.has(method))
      .map(([method, operation]): [string, string, OpenApiOperation] => [method, path, operation]),
  );
}

/** Resolves a local `$ref` (`#/a/b`) in the document. */
function resolvePointer(document: unknown, ref: string): unknown {
  assert.ok(ref.startsWith('#/'), `only local references are expected: ${ref}`);
  return ref
    .slice(2)
    .split('/')
    .map(segment => decodeURIComponent(segment).replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<unknown>(
      (node, segment) =>
        typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[segment] : undefined,
      document,
    );
}

function collectRefs(node: unknown, into: string[] = []): string[] {
  if (Array.isArray(node)) for (const item of node) collectRefs(item, into);
  else if (typeof node === 'object' && node !== null) {
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string') into.push(value);
      else collectRefs(value, into);
    }
  }
  return into;
}

function pointerSegment(segment: string): string {
  return encodeURIComponent(segment.replace(/~/g, '~0').replace(/\//g, '~1'));
}

// ---------------------------------------------------------------------------------------

describe('admin API of a running broker', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;
  let admin: AdminClient;
  let kms: KmsV2Client;
  /** Scans must begin after each other: each a millisecond after the last at least. */
  let lastScanAt = 0;
  const scanAt = () => new Date((lastScanAt = Math.max(Date.now(), lastScanAt + 1)));

  before(async () => {
    token = createToken();
    // A version that stopped writing is judged by the next scan at once.
    config = writeConfig(token, { retirement: { scanAfterWriteMs: 0 } });
    broker = await startServing(config.path, token.env);
    admin = adminClient(config.adminSocket);
    kms = createKmsV2Client(config.socket);
  });

  after(async () => {
    kms?.close();
    await broker?.stop();
    token?.remove();
  });

  const status = async () => json<StatusBody>(await admin.get('/v1/status', config.viewerToken));
  const keys = async () => json<KeysBody>(await admin.get('/v1/keys', config.viewerToken));
  const writeVersion = async () => {
    const version = (await status()).writeVersions.hsm;
    assert.ok(version !== undefined);
    return version;
  };
  const rotate = async () => json<RotateBody>(await admin.post('/v1/backends/hsm/rotate', config.adminToken));
  const versionAction = (version: string, action: string, tokenValue = config.adminToken) =>
    admin.post(`/v1/backends/hsm/versions/${version}/${action}`, tokenValue);
  const failover = async () => {
    const response = await admin.get('/v1/failover', config.viewerToken);
    return { setting: json<Failover>(response), etag: etagOf(response) };
  };

  describe('endpoints', () => {
    it('answers /healthz and /readyz without a token', async () => {
      assert.deepEqual(json(await admin.get('/healthz')), { status: 'ok' });
      assert.deepEqual(json(await admin.get('/readyz')), { status: 'ready' });
    });

    it('reports in /v1/status the key_id that gRPC Status returns, with health and write versions', async () => {
      const body = await status();
      const grpc = await kms.status();
      assert.equal(body.keyId, grpc.key_id);
      assert.match(body.keyId, /^kbr1-/);
      assert.equal(body.healthz, 'ok');
      assert.equal(body.healthz, grpc.healthz);
      assert.equal(body.kmsApiVersion, 'v2');
      assert.match(body.writeVersions.hsm ?? '', /^\d+$/);
      assert.deepEqual(body.failover, { order: ['hsm'], wrap: 'first' });
      assert.ok(Number.isInteger(body.uptimeSeconds) && body.uptimeSeconds >= 0);
      assert.match(body.version, /^\d+\.\d+\.\d+/);
    });

    it('lists each backend with its health, breaker and write version in /v1/backends', async () => {
      const body = json<{ backends: BackendView[] }>(await admin.get('/v1/backends', config.viewerToken));
      assert.equal(body.backends.length, 1);
      const [hsm] = body.backends;
      assert.ok(hsm !== undefined);
      assert.equal(hsm.name, 'hsm');
      assert.equal(hsm.type, 'pkcs11');
      assert.equal(hsm.healthy, true);
      assert.equal(hsm.breaker, 'closed');
      assert.deepEqual(hsm.errors, {});
      assert.equal(hsm.writeVersion, await writeVersion());
    });

    it('lists every key version with its role and usage in /v1/keys', async () => {
      const body = await keys();
      assert.deepEqual(Object.keys(body.backends), ['hsm']);
      const versions = body.backends.hsm ?? [];
      assert.ok(versions.length >= 1);
      assert.deepEqual(
        versions.filter(version => version.role === 'write').map(version => version.version),
        [await writeVersion()],
      );
      for (const version of versions) {
        assert.ok(!Number.isNaN(Date.parse(version.createdAt)), `createdAt ${version.createdAt}`);
        assert.ok(Number.isInteger(version.decryptCount) && version.decryptCount >= 0);
        assert.ok(Number.isInteger(version.decryptsSinceStart) && version.decryptsSinceStart >= 0);
      }
    });

    it('rotates: the new version writes, its key_id is what gRPC Status returns and new Encrypts carry, old data still reads', async () => {
      const old = await encryptOne(kms);
      const keyIdBefore = (await kms.status()).key_id;
      const versionsBefore = ((await keys()).backends.hsm ?? []).map(entry => entry.version);
      const rotated = await rotate();
      assert.equal(rotated.backend, 'hsm');
      assert.ok(!versionsBefore.includes(rotated.version), 'a new version');
      assert.notEqual(rotated.keyId, keyIdBefore);
      assert.equal((await kms.status()).key_id, rotated.keyId);
      assert.equal((await status()).keyId, rotated.keyId);
      const fresh = await encryptOne(kms);
      assert.equal(fresh.key_id, rotated.keyId);
      assert.equal(fresh.keyVersion, rotated.version);
      const after = await keys();
      assert.equal(roleOf(after, 'hsm', rotated.version), 'write');
      assert.equal(roleOf(after, 'hsm', old.keyVersion), 'active');
      await decryptsTo(kms, old);
      await decryptsTo(kms, fresh);
    });

    it('runs concurrent rotations one at a time: each gets its own version and the last one writes', async () => {
      const results = await Promise.all([rotate(), rotate(), rotate()]);
      const versions = results.map(result => result.version);
      assert.equal(new Set(versions).size, 3, `distinct versions: ${versions.join(', ')}`);
      const newest = [...versions].sort((x, y) => Number(x) - Number(y)).at(-1);
      assert.equal(await writeVersion(), newest);
      assert.equal((await kms.status()).key_id, results.find(result => result.version === newest)?.keyId);
    });

    it('retires a version a scan shows unneeded, so its data no longer decrypts, and restores it', async () => {
      await rotate();
      const item = await encryptOne(kms);
      const newest = await rotate();
      // The scan saw the stored data under the newest version only (as after a migration).
      await recordScan(
        admin,
        config.adminToken,
        usageScan(scanAt(), [[{ backend: 'hsm', version: newest.version }, 1]]),
      );
      const retired = json<VersionStateBody>(await versionAction(item.keyVersion, 'retire'));
      assert.deepEqual(retired, {
        backend: 'hsm',
        version: item.keyVersion,
        state: 'retired',
        forced: false,
      });
      assert.equal(roleOf(await keys(), 'hsm', item.keyVersion), 'retired');
      await expectGrpcError(
        kms.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id }),
        GrpcStatus.FAILED_PRECONDITION,
        /^KEY_VERSION_RETIRED: /,
        'Decrypt under a retired version',
      );
      const restored = json<VersionStateBody>(await versionAction(item.keyVersion, 'restore'));
      assert.deepEqual(restored, {
        backend: 'hsm',
        version: item.keyVersion,
        state: 'active',
        forced: false,
      });
      assert.equal(roleOf(await keys(), 'hsm', item.keyVersion), 'active');
      await decryptsTo(kms, item);
    });

    it('reads the failover setting with an ETag and changes it with If-Match', async () => {
      const first = await failover();
      assert.deepEqual(first.setting, { order: ['hsm'], wrap: 'first' });
      assert.equal((await failover()).etag, first.etag, 'the ETag is stable while the setting is');
      const changed = await putFailover(
        admin,
        config.adminToken,
        { order: ['hsm'], wrap: 'all' },
        first.etag,
      );
      const body = json<Failover & { keyId: string }>(changed);
      assert.deepEqual(body, { order: ['hsm'], wrap: 'all', keyId: (await kms.status()).key_id });
      const newEtag = etagOf(changed);
      assert.notEqual(newEtag, first.etag);
      const reread = await failover();
      assert.deepEqual(reread.setting, { order: ['hsm'], wrap: 'all' });
      assert.equal(reread.etag, newEtag);
      assert.deepEqual((await status()).failover, { order: ['hsm'], wrap: 'all' });
      const back = await putFailover(admin, config.adminToken, first.setting, newEtag);
      assert.deepEqual(json<Failover>(back).wrap, 'first');
      assert.equal(etagOf(back), first.etag, 'the same setting has the same ETag');
    });
  });

  describe('authentication and roles', () => {
    it('refuses a request without a token, with an unknown token or another scheme as 401 problem+json', async () => {
      const attempts: [string, AdminResponse][] = [
        ['no token, read', await admin.get('/v1/status')],
        ['no token, change', await admin.post('/v1/backends/hsm/rotate')],
        ['unknown token, read', await admin.get('/v1/keys', randomBytes(24).toString('base64url'))],
        ['unknown token, change', await admin.post('/v1/backends/hsm/rotate', 'not-a-token')],
        [
          'basic auth',
          await admin.request('/v1/status', { headers: { authorization: `Basic ${config.adminToken}` } }),
        ],
      ];
      for (const [what, response] of attempts) {
        assert.equal(response.status, 401, what);
        problem(response, 401, 'UNAUTHORIZED');
      }
      const unknown = attempts[2]?.[1];
      assert.ok(unknown !== undefined);
      assert.ok(!unknown.text.includes(config.adminToken) && !unknown.text.includes(config.viewerToken));
    });

    it('challenges a 401 with WWW-Authenticate: Bearer, as HTTP requires (RFC 9110 15.5.2)', async () => {
      for (const response of [await admin.get('/v1/status'), await admin.get('/v1/status', 'not-a-token')]) {
        assert.equal(response.status, 401);
        assert.match(
          String(response.headers['www-authenticate'] ?? ''),
          /^Bearer\b/i,
          'a 401 without a WWW-Authenticate challenge',
        );
      }
    });

    it('lets the viewer token read every resource', async () => {
      for (const path of [
        '/v1/status',
        '/v1/backends',
        '/v1/keys',
        '/v1/failover',
        '/v1/usage',
        '/v1/rotation',
      ]) {
        assert.equal((await admin.get(path, config.viewerToken)).status, 200, path);
        assert.equal((await admin.get(path, config.adminToken)).status, 200, path);
      }
    });

    it('tells each token its name and role (whoami), and no token nothing', async () => {
      assert.deepEqual((await admin.get('/v1/whoami', config.viewerToken)).body, {
        name: 'dashboards',
        role: 'viewer',
      });
      assert.deepEqual((await admin.get('/v1/whoami', config.adminToken)).body, {
        name: 'ops',
        role: 'admin',
      });
      problem(await admin.get('/v1/whoami'), 401, 'UNAUTHORIZED');
    });

    it('serves no web console, nor its health history, unless admin.console.enabled', async () => {
      for (const path of ['/console/', '/console/console.js', '/v1/backends/history'])
        problem(await admin.get(path, config.adminToken), 404, 'NOT_FOUND');
    });

    it('refuses every change by the viewer token as 403, audits the attempt, changes nothing; the admin token may', async () => {
      await rotate();
      const keysBefore = roles(await keys());
      const version = keysBefore.hsm?.find(([, role]) => role === 'active')?.[0];
      assert.ok(version !== undefined, 'an active, non-write version');
      const { setting, etag } = await failover();
      const keyIdBefore = (await kms.status()).key_id;
      const mark = broker.logs.length;

      const attempts: [string, () => Promise<AdminResponse>][] = [
        ['POST /v1/backends/hsm/rotate', () => admin.post('/v1/backends/hsm/rotate', config.viewerToken)],
        [
          `POST /v1/backends/hsm/versions/${version}/retire`,
          () => versionAction(version, 'retire', config.viewerToken),
        ],
        [
          `POST /v1/backends/hsm/versions/${version}/retire?force=true`,
          () => versionAction(version, 'retire?force=true', config.viewerToken),
        ],
        [
          `POST /v1/backends/hsm/versions/${version}/restore`,
          () => versionAction(version, 'restore', config.viewerToken),
        ],
        [
          'PUT /v1/failover',
          () => putFailover(admin, config.viewerToken, { order: ['hsm'], wrap: 'all' }, etag),
        ],
      ];
      for (const [action, attempt] of attempts) {
        problem(await attempt(), 403, 'FORBIDDEN', /viewer role/);
        const record = await auditRecord(broker, mark, r => r.action === action);
        assert.equal(record.actor, 'dashboards', action);
        assert.equal(record.outcome, 'FORBIDDEN', action);
      }
      assert.deepEqual(roles(await keys()), keysBefore);
      assert.deepEqual((await failover()).setting, setting);
      assert.equal((await kms.status()).key_id, keyIdBefore);

      // The same changes with the admin token go through.
      json<RotateBody>(await admin.post('/v1/backends/hsm/rotate', config.adminToken));
      json<VersionStateBody>(await versionAction(version, 'restore', config.adminToken));
      json<Failover>(await putFailover(admin, config.adminToken, setting, etag));
    });
  });

  describe('validation and refusals', () => {
    it('refuses a body that is not JSON as 400 INVALID_REQUEST', async () => {
      const { etag } = await failover();
      const response = await admin.request('/v1/failover', {
        method: 'PUT',
        token: config.adminToken,
        body: '{"order": ["hsm"], "wrap": ',
        headers: { 'content-type': 'application/json', 'if-match': etag },
      });
      problem(response, 400, 'INVALID_REQUEST', /not valid JSON/);
      assert.equal((await failover()).etag, etag);
    });

    it('refuses an unknown field in the failover body, naming it, and an unknown query parameter', async () => {
      const { etag, setting } = await failover();
      const body = { order: ['hsm'], wrap: 'all', wrapMode: 'all' };
      const response = await putFailover(admin, config.adminToken, body, etag);
      problem(response, 400, 'INVALID_REQUEST', /wrapMode/);
      assert.deepEqual((await failover()).setting, setting, 'nothing changed');

      // A typo of ?force must not be ignored (the write version: a retirement would be refused anyway).
      const typo = await versionAction(await writeVersion(), 'retire?forced=true');
      problem(typo, 400, 'INVALID_REQUEST', /forced/);
    });

    it('answers 404 for an unknown backend, an unknown version and an unknown route', async () => {
      problem(await admin.post('/v1/backends/nope/rotate', config.adminToken), 404, 'NOT_FOUND', /nope/);
      problem(await versionAction('999', 'retire'), 404, 'NOT_FOUND', /999/);
      problem(await versionAction('999', 'restore'), 404, 'NOT_FOUND', /999/);
      problem(
        await admin.post('/v1/backends/nope/versions/1/retire', config.adminToken),
        404,
        'NOT_FOUND',
        /nope/,
      );
      problem(await admin.get('/v1/nothing-here', config.adminToken), 404, 'NOT_FOUND');
      // A broker without `cluster` has no peers to show, and says how to get some.
      problem(
        await admin.get('/v1/cluster', config.viewerToken),
        404,
        'NOT_CLUSTERED',
        /add `cluster` and `etcd`/,
      );
      problem(
        await admin.request('/v1/keys', { method: 'DELETE', token: config.adminToken }),
        404,
        'NOT_FOUND',
      );
    });

    it('refuses to retire the write version as 409, even with force', async () => {
      const version = await writeVersion();
      problem(await versionAction(version, 'retire'), 409, 'VERSION_IN_USE', /write version/);
      problem(await versionAction(version, 'retire?force=true'), 409, 'VERSION_IN_USE', /write version/);
      assert.equal(roleOf(await keys(), 'hsm', version), 'write');
    });

    it('refuses to retire a version no scan has judged, or one a scan shows needed, as 409 saying what to run; force retires it, audited', async () => {
      const item = await encryptOne(kms);
      await rotate();
      const mark = broker.logs.length;
      problem(
        await versionAction(item.keyVersion, 'retire'),
        409,
        'NO_USAGE_EVIDENCE',
        new RegExp(
          `^version ${item.keyVersion} of backend hsm stopped writing at .*Run \`kms-broker usage\``,
        ),
      );
      await recordScan(
        admin,
        config.adminToken,
        usageScan(scanAt(), [
          [{ backend: 'hsm', version: item.keyVersion }, 12, { secrets: 10, configmaps: 2 }],
        ]),
      );
      problem(
        await versionAction(item.keyVersion, 'retire'),
        409,
        'VERSION_IN_USE',
        new RegExp(
          `^version ${item.keyVersion} of backend hsm is still needed by 12 stored objects with no other readable wrap \\(secrets 10, configmaps 2\\) in the usage scan of \\S+ \\(etcd revision 7\\); run \`kms-broker migrate\``,
        ),
      );
      const rotation = json<{
        stage: string;
        versions: { version: string; stage: string; neededBy?: unknown }[];
      }>(await admin.get('/v1/rotation', config.viewerToken));
      assert.equal(rotation.stage, 'needed');
      assert.deepEqual(rotation.versions.find(version => version.version === item.keyVersion)?.neededBy, {
        objects: 12,
        resources: { secrets: 10, configmaps: 2 },
      });
      const metrics = parseExposition((await admin.get('/metrics')).text);
      assert.equal(
        sampleValue(metrics, 'kms_broker_old_key_version_needed_objects', {
          backend: 'hsm',
          version: item.keyVersion,
        }),
        12,
        'the metric an alert on an unfinished rotation reads',
      );
      assert.ok((sampleValue(metrics, 'kms_broker_usage_scan_timestamp_seconds', {}) ?? 0) > 0);
      const refused = await auditRecord(
        broker,
        mark,
        r => r.action === 'retire' && (r.target as { version?: string }).version === item.keyVersion,
      );
      assert.equal(refused.outcome, 'NO_USAGE_EVIDENCE');

      const forced = json<VersionStateBody>(await versionAction(item.keyVersion, 'retire?force=true'));
      assert.deepEqual(forced, { backend: 'hsm', version: item.keyVersion, state: 'retired', forced: true });
      const record = await auditRecord(
        broker,
        mark,
        r => r.action === 'retire (forced)' && r.outcome === 'ok',
      );
      assert.equal(record.actor, 'ops');
      assert.deepEqual(record.target, { backend: 'hsm', version: item.keyVersion });
      await expectGrpcError(
        kms.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id }),
        GrpcStatus.FAILED_PRECONDITION,
        /^KEY_VERSION_RETIRED: /,
      );
      json<VersionStateBody>(await versionAction(item.keyVersion, 'restore'));
    });

    it('records a usage scan, serves it with a verdict per version, and refuses a malformed or older scan with problem+json', async () => {
      const { writeVersions } = await status();
      const write = writeVersions.hsm ?? '';
      const scan = usageScan(scanAt(), [[{ backend: 'hsm', version: write }, 4]]);
      await recordScan(admin, config.adminToken, scan);
      const usage = json<{ lastScan: unknown; versions: { version: string; stage: string }[] }>(
        await admin.get('/v1/usage', config.viewerToken),
      );
      assert.deepEqual(usage.lastScan, scan);
      assert.equal(usage.versions.find(version => version.version === write)?.stage, 'write');

      const older = { ...scan, scannedAt: new Date(Date.parse(scan.scannedAt) - 60000).toISOString() };
      const outdated = await admin.request('/v1/usage/scans', {
        method: 'POST',
        token: config.adminToken,
        body: older,
      });
      problem(outdated, 409, 'SCAN_OUTDATED', /a newer usage scan .* is already recorded/);
      const malformed = await admin.request('/v1/usage/scans', {
        method: 'POST',
        token: config.adminToken,
        body: { ...scan, revision: 'latest' },
      });
      problem(malformed, 400, 'INVALID_REQUEST', /revision/);
      const viewer = await admin.request('/v1/usage/scans', {
        method: 'POST',
        token: config.viewerToken,
        body: scan,
      });
      problem(viewer, 403, 'FORBIDDEN');
      assert.deepEqual(
        json<{ lastScan: unknown }>(await admin.get('/v1/usage', config.viewerToken)).lastScan,
        scan,
      );
    });

    it('refuses a failover change with a stale ETag as 412 and without If-Match as 428, changing nothing', async () => {
      const stale = await failover();
      const changed = await putFailover(
        admin,
        config.adminToken,
        { order: ['hsm'], wrap: 'all' },
        stale.etag,
      );
      const current = etagOf(changed);

      problem(
        await putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'first' }, stale.etag),
        412,
        'PRECONDITION_FAILED',
      );
      problem(
        await putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'first' }),
        428,
        'PRECONDITION_REQUIRED',
        /If-Match/,
      );
      const now = await failover();
      assert.deepEqual(now.setting, { order: ['hsm'], wrap: 'all' });
      assert.equal(now.etag, current);
      json<Failover>(await putFailover(admin, config.adminToken, stale.setting, current));
    });

    it('lets exactly one of two concurrent failover changes made from the same ETag win', async () => {
      const { etag, setting } = await failover();
      const [a, b] = await Promise.all([
        putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'all' }, etag),
        putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'first' }, etag),
      ]);
      assert.ok(a !== undefined && b !== undefined);
      assert.deepEqual([a.status, b.status].sort(), [200, 412], `${a.text} ${b.text}`);
      const winner = a.status === 200 ? a : b;
      assert.deepEqual((await failover()).setting, { order: ['hsm'], wrap: (winner.body as Failover).wrap });
      const { etag: latest } = await failover();
      json<Failover>(await putFailover(admin, config.adminToken, setting, latest));
    });

    it('refuses a failover order naming an unknown backend, or one backend twice, as 400', async () => {
      const { etag, setting } = await failover();
      problem(
        await putFailover(admin, config.adminToken, { order: ['hsm', 'nope'], wrap: 'first' }, etag),
        400,
        'INVALID_REQUEST',
        /order\[1\]: no backend is named 'nope'/,
      );
      problem(
        await putFailover(admin, config.adminToken, { order: ['hsm', 'hsm'], wrap: 'first' }, etag),
        400,
        'INVALID_REQUEST',
      );
      const now = await failover();
      assert.deepEqual(now.setting, setting);
      assert.equal(now.etag, etag);
    });
  });

  describe('audit', () => {
    it('writes an audit record for every change: actor, action, target, result and outcome', async () => {
      const mark = broker.logs.length;
      const keyIdBefore = (await kms.status()).key_id;
      const rotated = await rotate();
      // Nothing was written under `rotated.version`: a scan after it shows nothing needs it.
      const newest = await rotate();
      await recordScan(
        admin,
        config.adminToken,
        usageScan(scanAt(), [[{ backend: 'hsm', version: newest.version }, 1]]),
      );
      json<VersionStateBody>(await versionAction(rotated.version, 'retire'));
      json<VersionStateBody>(await versionAction(rotated.version, 'restore'));
      const { etag, setting } = await failover();
      const changed = json<Failover & { keyId: string }>(
        await putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'all' }, etag),
      );
      json<Failover>(
        await putFailover(
          admin,
          config.adminToken,
          setting,
          etagOf(await admin.get('/v1/failover', config.viewerToken)),
        ),
      );
      problem(await versionAction('4711', 'retire'), 404, 'NOT_FOUND');

      const rotation = await auditRecord(
        broker,
        mark,
        r =>
          r.action === 'rotate' &&
          (r.result as { version?: string } | undefined)?.version === rotated.version,
      );
      assert.equal(rotation.actor, 'ops');
      assert.equal(rotation.outcome, 'ok');
      assert.deepEqual(rotation.target, { backend: 'hsm', keyIdBefore });
      assert.deepEqual(rotation.result, { version: rotated.version, keyId: rotated.keyId });

      const retirement = await auditRecord(broker, mark, r => r.action === 'retire' && r.outcome === 'ok');
      assert.equal(retirement.actor, 'ops');
      assert.deepEqual(retirement.target, { backend: 'hsm', version: rotated.version });
      assert.deepEqual(retirement.result, { before: 'active', after: 'retired' });

      const restoration = await auditRecord(broker, mark, r => r.action === 'restore' && r.outcome === 'ok');
      assert.equal(restoration.actor, 'ops');
      assert.deepEqual(restoration.target, { backend: 'hsm', version: rotated.version });
      assert.deepEqual(restoration.result, { before: 'retired', after: 'active' });

      const failoverChange = await auditRecord(
        broker,
        mark,
        r => r.action === 'set failover' && (r.target as { wrap?: string }).wrap === 'all',
      );
      assert.equal(failoverChange.actor, 'ops');
      assert.equal(failoverChange.outcome, 'ok');
      assert.deepEqual(failoverChange.target, { order: ['hsm'], wrap: 'all' });
      assert.deepEqual(failoverChange.result, {
        before: setting,
        after: { order: ['hsm'], wrap: 'all' },
        keyId: changed.keyId,
      });

      const refused = await auditRecord(
        broker,
        mark,
        r => r.action === 'retire' && (r.target as { version?: string }).version === '4711',
      );
      assert.equal(refused.actor, 'ops');
      assert.equal(refused.outcome, 'NOT_FOUND');
      assert.equal(refused.result, undefined);
    });

    it('never logs a bearer token', async () => {
      const mark = broker.logs.length;
      await admin.get('/v1/status', 'wrong-token-but-logged-would-be-bad');
      await admin.post('/v1/backends/hsm/rotate', config.viewerToken);
      await auditRecord(broker, mark, r => r.outcome === 'FORBIDDEN');
      const everything = JSON.stringify(broker.logs) + broker.text.join('\n');
      for (const secret of [config.adminToken, config.viewerToken, 'wrong-token-but-logged-would-be-bad'])
        assert.ok(!everything.includes(secret), 'a token appears in the log');
    });
  });

  describe('metrics', () => {
    it('reads the exposition strictly (the parser this file relies on rejects what Prometheus rejects)', () => {
      const good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 3\n';
      assert.equal(parseExposition(good).samples[0]?.labels.y, 'q"uote');
      const bad = [
        'a_total 1\n', // no TYPE
        '# TYPE a_total counter\na_total{x=1} 1\n', // unquoted label value
        '# TYPE a_total counter\na_total{x="1"} one\n', // not a number
        '# TYPE a_total counter\na_total 1', // no final line feed
        '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="2"} 1\n', // family not grouped
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n', // not cumulative
      ];
      for (const text of bad) assert.throws(() => parseExposition(text), JSON.stringify(text));
    });

    it('serves /metrics in the Prometheus text format, and counters move with gRPC traffic', async () => {
      const N = 7;
      const first = await admin.get('/metrics');
      assert.equal(first.status, 200);
      assert.match(String(first.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      const before = parseExposition(first.text);
      const items = [];
      for (let i = 0; i < N; i++) items.push(await encryptOne(kms));
      for (const item of items) await decryptsTo(kms, item);
      const after = parseExposition((await admin.get('/metrics')).text);

      const grew = (name: string, labels: Record<string, string>) => {
        const now = sampleValue(after, name, labels);
        assert.ok(now !== undefined, `${name}${JSON.stringify(labels)} is exported`);
        return now - (sampleValue(before, name, labels) ?? 0);
      };
      const backend = 'kms_broker_backend_calls_total';
      assert.equal(grew(backend, { backend: 'hsm', operation: 'unwrap', outcome: 'ok' }), N);
      assert.equal(grew(backend, { backend: 'hsm', operation: 'wrap', outcome: 'ok' }), N);
      const latency = 'kms_broker_backend_call_duration_seconds_count';
      assert.equal(grew(latency, { backend: 'hsm', operation: 'unwrap' }), N);
      assert.equal(grew('kms_broker_kms_requests_total', { method: 'v2.Encrypt', outcome: 'ok' }), N);
      assert.equal(grew('kms_broker_kms_requests_total', { method: 'v2.Decrypt', outcome: 'ok' }), N);
      assert.equal(grew('kms_broker_kms_request_duration_seconds_count', { method: 'v2.Decrypt' }), N);
      assert.equal(
        sampleValue(after, 'kms_broker_write_key_version', { backend: 'hsm' }),
        Number(await writeVersion()),
      );
      const breaker = (state: string) =>
        sampleValue(after, 'kms_broker_backend_breaker_state', { backend: 'hsm', state });
      assert.deepEqual([breaker('closed'), breaker('half-open'), breaker('open')], [1, 0, 0]);
      // The first health probe runs beside the calls above; up is absent until it ends.
      const probed = await until(
        () => admin.get('/metrics'),
        got => got.text.includes('kms_broker_backend_up{'),
        'the first health probe shows in /metrics',
      );
      assert.equal(sampleValue(parseExposition(probed.text), 'kms_broker_backend_up', { backend: 'hsm' }), 1);
      assert.equal(sampleValue(after, 'kms_broker_status_healthy', {}), 1);
    });

    it('labels samples with bounded values only: outcomes are error codes, never a key_id or error text', async () => {
      const item = await encryptOne(kms);
      const tampered = Buffer.from(item.ciphertext);
      tampered[tampered.length - 1] = (tampered.at(-1) ?? 0) ^ 0x01;
      const details: string[] = [];
      for (const attempt of [
        () => kms.decrypt({ ciphertext: tampered, key_id: item.key_id }),
        () => kms.decrypt({ ciphertext: item.ciphertext, key_id: 'foreign-plugin-key' }),
      ]) {
        await assert.rejects(attempt(), (error: { code?: number; details?: string }) => {
          assert.equal(error.code, GrpcStatus.INVALID_ARGUMENT);
          details.push(error.details ?? '');
          return true;
        });
      }
      const text = (await admin.get('/metrics')).text;
      const exposition = parseExposition(text);
      assert.ok(
        (sampleValue(exposition, 'kms_broker_backend_calls_total', {
          backend: 'hsm',
          operation: 'unwrap',
          outcome: 'INVALID_CIPHERTEXT',
        }) ?? 0) >= 1,
        'a failed unwrap is counted under its error code',
      );
      assert.ok(
        (sampleValue(exposition, 'kms_broker_kms_requests_total', {
          method: 'v2.Decrypt',
          outcome: 'INVALID_CIPHERTEXT',
        }) ?? 0) >= 2,
      );
      const codes = new Set(['ok', ...Object.keys(errorCatalog)]);
      for (const sample of exposition.samples) {
        for (const [label, value] of Object.entries(sample.labels)) {
          const where = `${sample.name}{${label}="${value}"}`;
          assert.ok(!value.includes('kbr1-'), `${where}: a raw key_id`);
          assert.ok(!/\s/.test(value) && value.length <= 64, `${where}: free text`);
          if (label === 'outcome') assert.ok(codes.has(value), `${where}: not ok or a catalog code`);
          if (label === 'backend') assert.equal(value, 'hsm', where);
          if (label === 'method') assert.match(value, /^v2\.(Status|Encrypt|Decrypt)$/, where);
        }
      }
      assert.ok(!text.includes('kbr1-'), 'no key_id anywhere in the exposition');
      for (const detail of details) {
        const message = detail.replace(/^[A-Z_]+: /, '');
        assert.ok(message.length > 0 && !text.includes(message), `error text in metrics: ${message}`);
      }
    });
  });

  describe('OpenAPI document', () => {
    const fetchDocument = async () => json<OpenApiDocument>(await admin.get('/openapi.json'));

    it('is an OpenAPI 3.1 document listing every route the server serves, each with its method', async () => {
      const document = await fetchDocument();
      assert.match(String(document.openapi), /^3\.1\.\d+$/);
      assert.equal(typeof document.info?.title, 'string');
      assert.equal(document.info?.version, (await status()).version);
      const listed = operations(document).map(([method, path]) => `${method.toUpperCase()} ${path}`);
      assert.deepEqual([...listed].sort(), [...SERVED_OPERATIONS].sort());
    });

    it('is well-formed: responses, path parameters, security schemes and references all hold', async () => {
      const document = await fetchDocument();
      const schemes = Object.keys(document.components?.securitySchemes ?? {});
      const checkSecurity = (security: Record<string, unknown>[] | undefined, where: string) => {
        for (const requirement of security ?? [])
          for (const name of Object.keys(requirement))
            assert.ok(schemes.includes(name), `${where}: unknown security scheme ${name}`);
      };
      checkSecurity(document.security, 'root');
      const ids = new Set<string>();
      for (const [method, path, operation] of operations(document)) {
        const where = `${method.toUpperCase()} ${path}`;
        const responses = Object.entries(operation.responses ?? {});
        assert.ok(responses.length > 0, `${where}: no responses`);
        for (const [code, response] of responses) {
          assert.match(code, /^(?:[1-5]\d\d|[1-5]XX|default)$/, `${where}: response key ${code}`);
          assert.equal(typeof response.description, 'string', `${where} ${code}: a description is required`);
        }
        assert.ok(
          responses.some(([code]) => code.startsWith('2')),
          `${where}: no success response`,
        );
        const templated = [...path.matchAll(/\{([^}]+)\}/g)].map(match => match[1]);
        const inPath = (operation.parameters ?? []).filter(parameter => parameter.in === 'path');
        assert.deepEqual(
          inPath.map(parameter => parameter.name).sort(),
          [...templated].sort(),
          `${where}: path parameters`,
        );
        for (const parameter of operation.parameters ?? []) {
          assert.ok(['query', 'header', 'path', 'cookie'].includes(String(parameter.in)), where);
          assert.equal(typeof parameter.name, 'string', where);
          assert.ok(
            parameter.schema !== undefined,
            `${where}: parameter ${String(parameter.name)} has no schema`,
          );
          if (parameter.in === 'path') assert.equal(parameter.required, true, `${where}: path parameter`);
        }
        checkSecurity(operation.security, where);
        if (operation.operationId !== undefined) {
          assert.ok(!ids.has(operation.operationId), `${where}: duplicate operationId`);
          ids.add(operation.operationId);
        }
      }
      for (const ref of collectRefs(document))
        assert.ok(resolvePointer(document, ref) !== undefined, `unresolved $ref ${ref}`);
    });

    it('documents which routes need a token as the server enforces it', async () => {
      const document = await fetchDocument();
      const open = new Set(['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /openapi.json']);
      assert.ok((document.security ?? []).some(requirement => 'bearer' in requirement));
      for (const [method, path, operation] of operations(document)) {
        const where = `${method.toUpperCase()} ${path}`;
        const concrete = path.replace('{name}', 'hsm').replace('{version}', '1');
        const response = await admin.request(concrete, {
          method: method.toUpperCase(),
          ...(method === 'put' && {
            body: { order: ['hsm'], wrap: 'first' },
            headers: { 'if-match': '"x"' },
          }),
        });
        assert.notEqual(response.status, 404, `${where} is documented but not served`);
        if (open.has(where)) {
          assert.deepEqual(operation.security, [], `${where}: documented as needing no token`);
          assert.equal(response.status, 200, `${where} without a token`);
        } else {
          assert.notDeepEqual(operation.security, [], `${where}: documented as open`);
          problem(response, 401, 'UNAUTHORIZED');
        }
      }
    });

    it('describes the bodies the server sends with the schemas it documents', async () => {
      const document = await fetchDocument();
      const id = 'https://kms-broker.invalid/openapi.json';
      const ajv = new Ajv2020({ strict: false, validateSchema: false, allErrors: true });
      ajv.addSchema(document, id);
      const check = (method: string, path: string, response: AdminResponse) => {
        const where = `${method.toUpperCase()} ${path} ${response.status}`;
        const content = document.paths?.[path]?.[method]?.responses?.[String(response.status)]?.content;
        assert.ok(content !== undefined, `${where}: not documented`);
        const mediaType = Object.keys(content)[0];
        assert.ok(mediaType !== undefined, `${where}: no media type`);
        const pointer = [
          'paths',
          path,
          method,
          'responses',
          String(response.status),
          'content',
          mediaType,
          'schema',
        ]
          .map(pointerSegment)
          .join('/');
        const validate = ajv.getSchema(`${id}#/${pointer}`);
        assert.ok(validate !== undefined, `${where}: schema not found`);
        assert.equal(validate({}), false, `${where}: the documented schema accepts anything`);
        assert.ok(validate(response.body), `${where}: ${ajv.errorsText(validate.errors)}`);
      };
      for (const path of ['/v1/status', '/v1/backends', '/v1/keys', '/v1/failover'])
        check('get', path, await admin.get(path, config.viewerToken));
      check(
        'post',
        '/v1/backends/{name}/rotate',
        await admin.post('/v1/backends/hsm/rotate', config.adminToken),
      );
      check(
        'post',
        '/v1/backends/{name}/rotate',
        await admin.post('/v1/backends/nope/rotate', config.adminToken),
      );
      check('get', '/v1/status', await admin.get('/v1/status'));
      check(
        'put',
        '/v1/failover',
        await putFailover(admin, config.adminToken, { order: ['hsm'], wrap: 'first' }),
      );
    });

    it('documents ?force of a retirement as optional, as the server treats it', async () => {
      const document = await fetchDocument();
      const retire = document.paths?.['/v1/backends/{name}/versions/{version}/retire']?.post;
      const force = retire?.parameters?.find(
        parameter => parameter.in === 'query' && parameter.name === 'force',
      );
      assert.ok(force !== undefined, '?force is documented');
      // A retirement without ?force is served (see above): the parameter is not required.
      assert.notEqual(force.required, true, 'documented as required, yet every retirement without it works');
    });

    it('documents problem responses with the media type they are served with', async () => {
      const document = await fetchDocument();
      const served = await admin.get('/v1/status');
      assert.match(String(served.headers['content-type']), /^application\/problem\+json/);
      for (const [method, path, operation] of operations(document)) {
        for (const [code, response] of Object.entries(operation.responses ?? {})) {
          if (!/^[45]/.test(code) || response.content === undefined) continue;
          assert.ok(
            'application/problem+json' in response.content,
            `${method.toUpperCase()} ${path} ${code}: documented as ${Object.keys(response.content).join(', ')}`,
          );
        }
      }
    });
  });
});

describe('admin changes across restarts', () => {
  let token: SoftHsmToken;
  const pin2 = randomBytes(8).toString('hex');

  before(() => {
    token = createToken();
    addToken(token, 'kms2', pin2);
    writeFileSync(join(token.dir, 'pin2'), `${pin2}\n`, { mode: 0o600 });
  });
  after(() => token?.remove());

  /** Two SoftHSM tokens behind one broker: hsm first, hsm2 second. */
  const twoBackends = (keyLabel: string) => ({
    backends: [
      pkcs11Backend(token, { keyLabel }),
      pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'kms2', pinFile: join(token.dir, 'pin2'), keyLabel }),
    ],
    failover: { order: ['hsm', 'hsm2'], wrap: 'first' },
  });

  /** Runs `body` against a served broker and always stops it, expecting a clean exit. */
  async function serving<T>(
    config: TestConfig,
    body: (broker: BrokerProcess, admin: AdminClient, kms: KmsV2Client) => Promise<T>,
  ): Promise<T> {
    const broker = await startServing(config.path, token.env);
    const kms = createKmsV2Client(config.socket);
    try {
      return await body(broker, adminClient(config.adminSocket), kms);
    } finally {
      kms.close();
      assert.equal(await broker.stop(), 0, 'the broker exits 0 on SIGTERM');
    }
  }

  it('keeps a rotation, a usage scan and a retirement made through the API across a restart', async () => {
    const config = writeConfig(token, { ...twoBackends('persist'), retirement: { scanAfterWriteMs: 0 } });
    const before = await serving(config, async (_broker, admin, kms) => {
      const old = await encryptOne(kms);
      const rotated = json<RotateBody>(await admin.post('/v1/backends/hsm/rotate', config.adminToken));
      // Stored data under hsm's version 1 is also wrapped by hsm2's version 1, which stays readable.
      const scan = usageScan(new Date(Date.now() + 1000), [
        [
          [
            { backend: 'hsm', version: old.keyVersion },
            { backend: 'hsm2', version: '1' },
          ],
          1,
        ],
      ]);
      await recordScan(admin, config.adminToken, scan);
      json<VersionStateBody>(
        await admin.post(`/v1/backends/hsm/versions/${old.keyVersion}/retire`, config.adminToken),
      );
      const keys = roles(json<KeysBody>(await admin.get('/v1/keys', config.viewerToken)));
      assert.deepEqual(keys, {
        hsm: [
          ['1', 'retired'],
          ['2', 'write'],
        ],
        hsm2: [['1', 'write']],
      });
      return { old, rotated, keys, scan };
    });
    await serving(config, async (_broker, admin, kms) => {
      assert.deepEqual(roles(json<KeysBody>(await admin.get('/v1/keys', config.viewerToken))), before.keys);
      assert.deepEqual(
        json<{ lastScan: unknown }>(await admin.get('/v1/usage', config.viewerToken)).lastScan,
        before.scan,
      );
      assert.equal((await kms.status()).key_id, before.rotated.keyId);
      assert.equal(
        json<StatusBody>(await admin.get('/v1/status', config.viewerToken)).keyId,
        before.rotated.keyId,
      );
      await expectGrpcError(
        kms.decrypt({ ciphertext: before.old.ciphertext, key_id: before.old.key_id }),
        GrpcStatus.FAILED_PRECONDITION,
        /^KEY_VERSION_RETIRED: /,
      );
    });
  });

  it('keeps a failover change across a restart, and key_id follows the new first backend', async () => {
    const config = writeConfig(token, twoBackends('order'));
    const changed = await serving(config, async (_broker, admin, kms) => {
      const keyIdBefore = (await kms.status()).key_id;
      const read = await admin.get('/v1/failover', config.viewerToken);
      const response = await putFailover(
        admin,
        config.adminToken,
        { order: ['hsm2', 'hsm'], wrap: 'first' },
        etagOf(read),
      );
      const body = json<Failover & { keyId: string }>(response);
      assert.notEqual(body.keyId, keyIdBefore);
      assert.equal((await kms.status()).key_id, body.keyId);
      const item = await encryptOne(kms);
      assert.equal(decodeEnvelope(item.ciphertext).header.backend, 'hsm2');
      assert.equal(item.key_id, body.keyId);
      return { keyId: body.keyId, etag: etagOf(response), item };
    });
    await serving(config, async (_broker, admin, kms) => {
      const read = await admin.get('/v1/failover', config.viewerToken);
      assert.deepEqual(json<Failover>(read), { order: ['hsm2', 'hsm'], wrap: 'first' });
      assert.equal(etagOf(read), changed.etag);
      const status = json<StatusBody>(await admin.get('/v1/status', config.viewerToken));
      assert.deepEqual(status.failover, { order: ['hsm2', 'hsm'], wrap: 'first' });
      assert.equal(status.keyId, changed.keyId);
      assert.equal((await kms.status()).key_id, changed.keyId);
      const item = await encryptOne(kms);
      assert.equal(decodeEnvelope(item.ciphertext).header.backend, 'hsm2');
      assert.equal(item.key_id, changed.keyId);
      await decryptsTo(kms, changed.item);
    });
  });

  it('lets an edited config file win over an earlier run-time failover change, and says so', async () => {
    const config = writeConfig(token, twoBackends('edited'));
    await serving(config, async (_broker, admin) => {
      const read = await admin.get('/v1/failover', config.viewerToken);
      json<Failover>(
        await putFailover(admin, config.adminToken, { order: ['hsm2', 'hsm'], wrap: 'first' }, etagOf(read)),
      );
    });
    writeFileSync(
      config.path,
      stringify({ ...config.values, failover: { order: ['hsm', 'hsm2'], wrap: 'all' } }),
    );
    await serving(config, async (broker, admin, kms) => {
      await broker.waitForLog(
        record =>
          record.msg ===
          'the config file changed the failover setting since the last run-time change; using the config',
      );
      assert.deepEqual(json<Failover>(await admin.get('/v1/failover', config.viewerToken)), {
        order: ['hsm', 'hsm2'],
        wrap: 'all',
      });
      const status = json<StatusBody>(await admin.get('/v1/status', config.viewerToken));
      assert.equal(status.keyId, (await kms.status()).key_id);
      const item = await encryptOne(kms);
      assert.equal(item.key_id, status.keyId);
      assert.equal(decodeEnvelope(item.ciphertext).header.backend, 'hsm');
      assert.ok(item.annotations['hsm2.wrap.kms-broker.io'] !== undefined, 'wrap: all also wraps with hsm2');
      await decryptsTo(kms, item);
    });
  });
});

describe('admin listener start-up checks', () => {
  let token: SoftHsmToken;
  before(() => {
    token = createToken();
  });
  after(() => token?.remove());

  it('refuses to start with admin.listen on a non-loopback address without TLS, exiting 4 with CONFIG_INVALID', async () => {
    const base = writeConfig(token);
    const config = writeConfig(
      token,
      { admin: { ...(base.values.admin as Record<string, unknown>), listen: '0.0.0.0:18787' } },
      base.dir,
    );
    const broker = spawnBroker(config.path, token.env);
    try {
      const served = await broker
        .waitForLog(record => record.msg === 'serving KMS on unix socket')
        .then(
          () => true,
          () => false,
        );
      assert.equal(served, false, 'the broker served with a plain-HTTP admin API on 0.0.0.0');
      assert.equal(await broker.exited, 4);
      assert.match(
        broker.text.join('\n'),
        /CONFIG_INVALID: .*admin\.listen: a non-loopback address needs admin\.tls/,
      );
      assert.equal(existsSync(config.socket), false, 'no KMS socket');
      assert.equal(existsSync(config.adminSocket), false, 'no admin socket');
    } finally {
      await broker.stop('SIGKILL');
    }
  });
  it('names every unusable TLS file of the admin listener at once, and exits 4 before serving', async () => {
    const base = writeConfig(token);
    const ca = createCa(join(base.dir, 'ca'));
    const missing = join(base.dir, 'absent-cert.pem');
    const config = writeConfig(
      token,
      {
        admin: {
          ...(base.values.admin as Record<string, unknown>),
          // A certificate where the key belongs, and a certificate that is not there.
          tls: { certFile: missing, keyFile: ca.certFile },
        },
      },
      base.dir,
    );
    const broker = spawnBroker(config.path, token.env);
    try {
      assert.equal(await broker.exited, 4, 'a supervisor must not restart it');
      const output = broker.text.join('\n');
      assert.match(output, new RegExp(`admin\\.tls\\.certFile: cannot read ${missing} \\(ENOENT\\)`));
      assert.match(
        output,
        new RegExp(`admin\\.tls\\.keyFile: ${ca.certFile} holds a certificate where a private key`),
      );
      assert.ok(!output.includes('INTERNAL'), output);
      assert.equal(existsSync(config.socket), false, 'no KMS socket');
    } finally {
      await broker.stop('SIGKILL');
    }
  });
});
