// `kms-broker usage` against a real etcd: values in every stored format, with envelopes made by
// a real broker on SoftHSM (two backends, wrap: all, a rotation), read as one snapshot,
// counted, printed and recorded, with the exit codes scripts rely on. etcd is never written.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { Value } from '@sinclair/typebox/value';
import { usageScanSchema, type UsageScan } from '../../src/broker/usage-scan.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { encodeWrapSet } from '../../src/grpc/wrap-set.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { CLI, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { etcdRevision, putAll } from '../helpers/etcd-kv.ts';
import { startEtcd, type Etcd } from '../helpers/kube-etcd.ts';
import { freePort } from '../helpers/kube-process.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { identityValue, kmsV1Value, kmsV2Value, localValue } from '../helpers/stored-values.ts';
import { startTlsEtcd } from '../helpers/etcd-tls.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';

function usage(args: readonly string[]): Promise<CliRun> {
  return runCli(['usage', ...args], { timeoutMs: 120_000 });
}

/** What the sample writes under /registry/: 30 values, and one outside the prefix. */
const EXPECTED_FORMATS = { aescbc: 1, aesgcm: 1, identity: 2, 'kms-v1': 3, 'kms-v2': 22, secretbox: 1 };

describe('kms-broker usage against a real etcd', () => {
  let dir: string;
  let etcd: Etcd;
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;
  let kms: KmsV2Client;
  let keyIds: { first: string; rotated: string };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-usage-'));
    etcd = await startEtcd(dir);
    token = createToken();
    const pin2 = randomBytes(8).toString('hex');
    addToken(token, 'kms2', pin2);
    writeFileSync(join(token.dir, 'pin2'), `${pin2}\n`, { mode: 0o600 });
    config = writeConfig(token, {
      backends: [
        pkcs11Backend(token),
        pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'kms2', pinFile: join(token.dir, 'pin2') }),
      ],
      failover: { order: ['hsm', 'hsm2'], wrap: 'all' },
    });
    broker = await startBrokerProcess(config.path, token.env);
    await broker.waitForLog(record => record.msg === 'admin API listening');
    kms = createKmsV2Client(config.socket);
    const full = await kms.encrypt(randomBytes(32));
    assert.equal(Object.keys(full.annotations).length, 1, 'wrap: all puts the second wrap in an annotation');
    const rotation = await adminClient(config.adminSocket).post('/v1/backends/hsm/rotate', config.adminToken);
    assert.equal(rotation.status, 200, rotation.text);
    const rotated = await kms.encrypt(randomBytes(32));
    keyIds = { first: full.key_id, rotated: rotated.key_id };
    const v2 = (result: typeof full, annotations = result.annotations) =>
      kmsV2Value('kms-broker', { keyId: result.key_id, ciphertext: result.ciphertext, annotations });
    // What the v1 service hands the apiserver: every wrap of the DEK in one wrap set.
    const v1 = kmsV1Value('kms-broker', encodeWrapSet([full.ciphertext, ...Object.values(full.annotations)]));
    const entries: [string, Buffer][] = [
      ...range(10, index => [`/registry/secrets/ns/full-${index}`, v2(full)] as [string, Buffer]),
      // A seed that went out while hsm2 was down: the first wrap only.
      ...range(3, index => [`/registry/secrets/ns/thin-${index}`, v2(full, {})] as [string, Buffer]),
      ...range(5, index => [`/registry/configmaps/ns/c-${index}`, v2(rotated)] as [string, Buffer]),
      ...range(2, index => [`/registry/example.com/widgets/ns/w-${index}`, v2(rotated)] as [string, Buffer]),
      ...range(2, index => [`/registry/secrets/legacy/v1-${index}`, v1] as [string, Buffer]),
      [
        '/registry/secrets/other/aws',
        kmsV2Value('aws', { keyId: 'arn:aws:kms:k/1', ciphertext: randomBytes(180) }),
      ],
      ['/registry/secrets/other/v1', kmsV1Value('vault-v1', randomBytes(90))],
      [
        '/registry/secrets/ns/damaged',
        kmsV2Value('kms-broker', { keyId: full.key_id, ciphertext: randomBytes(60) }),
      ],
      ['/registry/secrets/local/cbc', localValue('aescbc')],
      ['/registry/secrets/local/gcm', localValue('aesgcm')],
      ['/registry/secrets/local/box', localValue('secretbox')],
      ['/registry/services/specs/default/kubernetes', identityValue()],
      ['/registry/namespaces/default', identityValue()],
      ['/registrz/outside', identityValue()],
    ];
    await putAll(etcd.url, entries);
  });

  after(async () => {
    kms?.close();
    await broker?.stop();
    await etcd?.stop();
    token?.remove();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const etcdFlags = () => ['--etcd-endpoints', etcd.url];

  it('counts per format, resource, key_id and backend key version, as JSON, without changing etcd', async () => {
    const before = await etcdRevision(etcd.url);
    const run = await usage([...etcdFlags(), '--no-record', '--json', '--config', config.path]);
    assert.equal(run.code, 0, run.stderr);
    const scan = JSON.parse(run.stdout) as UsageScan;
    assert.ok(Value.Check(usageScanSchema, scan), run.stdout);
    assert.equal(scan.revision, before);
    assert.equal(scan.objects, 30);
    assert.deepEqual(scan.formats, EXPECTED_FORMATS);
    const resources = Object.fromEntries(scan.resources.map(entry => [entry.resource, entry.objects]));
    assert.deepEqual(resources, {
      configmaps: 5,
      namespaces: 1,
      secrets: 21,
      services: 1,
      'widgets.example.com': 2,
    });
    assert.deepEqual(scan.keyIds, [
      { keyId: keyIds.first, objects: 14 },
      { keyId: keyIds.rotated, objects: 7 },
      { keyId: 'arn:aws:kms:k/1', objects: 1 },
    ]);
    assert.deepEqual(
      scan.wrapSets.map(set => [
        set.wraps.map(wrap => `${wrap.backend}=${wrap.version}`).join(' '),
        set.objects,
      ]),
      [
        ['hsm=1', 3],
        ['hsm=1 hsm2=1', 12],
        ['hsm=2 hsm2=1', 7],
      ],
    );
    assert.deepEqual(scan.undecodable, { objects: 1, resources: { secrets: 1 } });
    assert.match(run.stderr, /scanning etcd: 30\/30 values \(100%\)/);
    assert.equal(await etcdRevision(etcd.url), before, 'the scan wrote nothing to etcd');
  });

  it('prints the versions stored data needs and the thin envelopes, judged against the broker’s backends', async () => {
    const run = await usage([...etcdFlags(), '--no-record', '--config', config.path]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^hsm\s+1\s+15$/m);
    assert.match(run.stdout, /^hsm\s+2\s+7$/m);
    assert.match(run.stdout, /^hsm2\s+1\s+19$/m);
    assert.match(run.stdout, /^3 objects lack the wrap of a configured backend \(hsm, hsm2\)/m);
    assert.match(run.stdout, /^without hsm2: 3$/m);
    assert.match(run.stdout, /^1 values under the broker's KMS provider did not decode/m);
  });

  it('records the scan in the broker (POST /v1/usage/scans) and exits 0', async () => {
    const admin = await stubAdmin(201);
    try {
      const tokenFile = join(dir, 'stub-token');
      writeFileSync(tokenFile, 'stub-admin-token\n', { mode: 0o600 });
      const run = await usage([...etcdFlags(), '--admin', admin.url, '--token-file', tokenFile, '--json']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /recorded the scan of revision \d+ in the broker/);
      assert.equal(admin.posted.length, 1);
      assert.equal(admin.posted[0]?.authorization, 'Bearer stub-admin-token');
      assert.deepEqual(admin.posted[0]?.body, JSON.parse(run.stdout));
    } finally {
      await admin.close();
    }
  });

  it('exits 3 with the report printed when the broker refuses the record, and says how to record', async () => {
    const admin = await stubAdmin(403);
    try {
      const run = await usage([...etcdFlags(), '--admin', admin.url, '--json']);
      assert.equal(run.code, 3, run.stderr);
      assert.equal((JSON.parse(run.stdout) as UsageScan).objects, 30);
      assert.match(run.stderr, /not recorded: the broker refused it \(FORBIDDEN: .*\).*again.*--no-record/);
    } finally {
      await admin.close();
    }
  });

  it('exits 3 when the broker is unreachable, still printing the report (thin not judged)', async () => {
    const port = await freePort();
    const run = await usage([...etcdFlags(), '--admin', `http://127.0.0.1:${port}`]);
    assert.equal(run.code, 3, run.stderr);
    assert.match(
      run.stdout,
      /^not judged: the configured backends are unknown \(the broker is not reachable/m,
    );
    assert.match(run.stderr, new RegExp(`cannot reach the admin API at http://127.0.0.1:${port}`));
  });

  it('exits 1 naming the endpoint when etcd is down, and falls over to the next endpoint', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const down = await usage(['--etcd-endpoints', dead, '--no-record']);
    assert.equal(down.code, 1);
    assert.match(
      down.stderr,
      new RegExp(`ETCD_UNREACHABLE: cannot reach etcd at ${dead} \\(ECONNREFUSED\\)`),
    );
    const next = await usage(['--etcd-endpoints', `${dead},${etcd.url}`, '--no-record', '--json']);
    assert.equal(next.code, 0, next.stderr);
    assert.equal((JSON.parse(next.stdout) as UsageScan).objects, 30);
  });

  it('reads every page at the revision of the first, whatever is written meanwhile', async () => {
    const before = await etcdRevision(etcd.url);
    const child = spawn(
      CLI,
      ['usage', ...etcdFlags(), '--no-record', '--json', '--page-size', '5', '--rate', '10'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    try {
      const stdout: Buffer[] = [];
      child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
      const exited = new Promise<number | null>(resolve => child.once('exit', resolve));
      // The first progress line comes after the first page: write behind the scan's back.
      const lines = createInterface({ input: child.stderr });
      for await (const line of lines) if (/^scanning etcd: 5\/30/.test(line)) break;
      await putAll(
        etcd.url,
        range(5, index => [`/registry/secrets/zz/late-${index}`, identityValue()] as [string, Buffer]),
      );
      assert.equal(await exited, 0);
      const scan = JSON.parse(Buffer.concat(stdout).toString('utf8')) as UsageScan;
      assert.equal(scan.revision, before);
      assert.equal(scan.objects, 30);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('scans 10,000 values', async () => {
    const values = range(
      10_000,
      index =>
        [
          `/big/secrets/ns/s-${index}`,
          kmsV2Value('kms-broker', { keyId: keyIds.first, ciphertext: randomBytes(100) }),
        ] as [string, Buffer],
    );
    await putAll(etcd.url, values);
    const started = performance.now();
    const run = await usage([
      ...etcdFlags(),
      '--prefix',
      '/big/',
      '--rate',
      '1000000',
      '--no-record',
      '--json',
    ]);
    const wallMs = Math.round(performance.now() - started);
    assert.equal(run.code, 0, run.stderr);
    const scan = JSON.parse(run.stdout) as UsageScan;
    assert.equal(scan.objects, 10_000);
    assert.deepEqual(scan.formats, { 'kms-v2': 10_000 });
    console.log(
      `usage scan of 10,000 values: ${scan.durationMs} ms reading and counting, ${wallMs} ms for the whole command`,
    );
  });
});

describe('kms-broker usage against an etcd that serves TLS', () => {
  let dir: string;
  let etcd: Etcd;
  let files: {
    ca: string;
    cert: string;
    key: string;
    otherCa: string;
    strangerCert: string;
    strangerKey: string;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kmsb-usage-tls-'));
    // Empty: etcd's JSON gateway would dial etcd with the server certificate, which is for
    // serverAuth only here; the scan itself needs no data to prove the handshake.
    const started = await startTlsEtcd(dir, 'kube-apiserver-etcd-client');
    etcd = started.etcd;
    files = {
      ca: started.client.caFile,
      cert: started.client.certFile,
      key: started.client.keyFile,
      otherCa: started.otherCa,
      strangerCert: started.stranger.certFile,
      strangerKey: started.stranger.keyFile,
    };
  });

  after(async () => {
    await etcd?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const flags = (overrides: Partial<typeof files> = {}) => {
    const chosen = { ...files, ...overrides };
    return [
      '--etcd-endpoints',
      etcd.url,
      '--etcd-cacert',
      chosen.ca,
      '--etcd-cert',
      chosen.cert,
      '--etcd-key',
      chosen.key,
      '--no-record',
    ];
  };

  it('scans with the client certificate', async () => {
    const run = await usage([...flags(), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const scan = JSON.parse(run.stdout) as UsageScan;
    assert.equal(scan.objects, 0);
    assert.match(scan.revision, /^[1-9][0-9]*$/);
  });

  it('exits 1 naming the flag and file when a TLS file is missing', async () => {
    const run = await usage(flags({ key: join(dir, 'missing.key') }));
    assert.equal(run.code, 1);
    assert.match(run.stderr, /ETCD_TLS_FILE_UNREADABLE: --etcd-key: cannot read .*missing\.key \(ENOENT\)/);
  });

  it("exits 1 when etcd's certificate is not signed by --etcd-cacert", async () => {
    const run = await usage(flags({ ca: files.otherCa }));
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /ETCD_AUTH_FAILED: etcd at https:\/\/127\.0\.0\.1:\d+ presented a certificate that .* did not sign/,
    );
  });

  it('exits 1 when etcd refuses the client certificate', async () => {
    const run = await usage(flags({ cert: files.strangerCert, key: files.strangerKey }));
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /ETCD_AUTH_FAILED: etcd at https:\/\/127\.0\.0\.1:\d+ refused the client certificate/,
    );
  });
});

describe('kms-broker usage flags', () => {
  it('exits 1 on a bad flag value before reading anything, naming the flag', async () => {
    for (const [args, message] of [
      [['--rate', '0'], /INVALID_REQUEST: --rate: '0' must be/],
      [['--page-size', '2.5'], /INVALID_REQUEST: --page-size: '2.5' must be/],
      [['--prefix', 'registry'], /INVALID_REQUEST: --prefix: 'registry' must start and end with \//],
      [['--etcd-endpoints', 'ftp://x'], /INVALID_REQUEST: --etcd-endpoints: 'ftp:\/\/x' must be https/],
    ] as const) {
      const run = await usage([
        ...args,
        '--no-record',
        '--etcd-endpoints',
        args[0] === '--etcd-endpoints' ? args[1] : 'http://127.0.0.1:1',
      ]);
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, message);
    }
  });

  it('exits 1 before scanning when it is to record but is not told where the broker is', async () => {
    // Told nothing: no admin address, no config named, and none at the default path (a machine
    // that runs this suite is no broker's node).
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.KMS_BROKER_ADMIN;
    delete env.KMS_BROKER_CONFIG;
    const run = await runCli(['usage', '--etcd-endpoints', 'http://127.0.0.1:1'], { env });
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      /say where the admin API listens: --admin, KMS_BROKER_ADMIN or the broker's config \(no config file at \/etc\/kms-broker\/config\.yaml; pass --config FILE or set KMS_BROKER_CONFIG=FILE\), or pass --no-record/,
    );
  });
});

function range<T>(count: number, make: (index: number) => T): T[] {
  return Array.from({ length: count }, (_, index) => make(index));
}

interface StubAdmin {
  readonly url: string;
  readonly posted: { authorization: string | undefined; body: unknown }[];
  close(): Promise<void>;
}

/** An admin API that knows two backends and answers POST /v1/usage/scans with `status`. */
async function stubAdmin(status: number): Promise<StubAdmin> {
  const posted: StubAdmin['posted'] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/v1/backends') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ backends: [{ name: 'hsm' }, { name: 'hsm2' }] }));
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/usage/scans') {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as UsageScan;
        posted.push({ authorization: req.headers.authorization, body });
        if (status === 201) {
          res.writeHead(201, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({ scannedAt: body.scannedAt, revision: body.revision, objects: body.objects }),
          );
          return;
        }
        res.writeHead(status, { 'content-type': 'application/problem+json' });
        res.end(JSON.stringify({ code: 'FORBIDDEN', detail: 'the token may not do this', status }));
        return;
      }
      res.writeHead(404).end();
    });
  });
  await new Promise<void>(resolve => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    posted,
    close: () => new Promise<void>(resolve => server.close(() => resolve())),
  };
}
