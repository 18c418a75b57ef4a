// Files named in the config are read and checked when it is loaded: a missing, unreadable,
// empty or wrongly shaped file is one CONFIG_INVALID naming every such key, its path and the
// fix, and never a secret's contents. The disk here is a map handed in as the file reader.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { TObject, TSchema } from '@sinclair/typebox';
import { absolutePath } from '../../src/backends/config-schema.ts';
import { backendKinds } from '../../src/backends/kinds.ts';
import { exposedSecretFiles } from '../../src/config/config-files.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { BrokerError } from '../../src/errors.ts';
import { formatPublicKeyFile, generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { createCa } from '../helpers/x509.ts';
import { brokerError } from './expect-error.ts';

const dir = mkdtempSync(join(tmpdir(), 'config-files-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const CERT = createCa(dir).pem;
const KEY = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const CA_KEY = readFileSync(join(dir, 'ca.key'), 'utf8');
const SECRET = 'do-not-print-this-secret';
const ESCROW_PUBLIC_KEY = formatPublicKeyFile(generateEscrowKeyPair().publicKey);

type Disk = Record<string, string | NodeJS.ErrnoException>;

/** The broker's files, every one as it should be. */
function goodDisk(): Disk {
  return {
    '/etc/kb/admin.pem': CERT,
    // The key of the certificate above: the pairs (admin.tls, the Vault client) must match.
    '/etc/kb/admin.key': CA_KEY,
    '/etc/kb/clients-ca.pem': CERT,
    '/etc/kb/admin-token': `${SECRET}\n`,
    '/usr/lib/libsofthsm2.so': '\x7fELF...',
    '/etc/kb/pin': `${SECRET}\n`,
    '/etc/kb/vault-ca.pem': CERT,
    '/etc/kb/vault-client.pem': CERT,
    '/etc/kb/vault-client.key': CA_KEY,
    '/etc/kb/vault-token': SECRET,
    '/etc/kb/gcp-ca.pem': CERT,
    '/etc/kb/gcp.json': JSON.stringify({ type: 'service_account', private_key: SECRET }),
    '/etc/kb/azure.pem': `${CERT}${CA_KEY}`,
    '/etc/kb/escrow-public.pem': ESCROW_PUBLIC_KEY,
  };
}

const config = {
  socket: '/run/kb/kms.sock',
  state: { path: '/var/lib/kb/state.json' },
  admin: {
    listen: '127.0.0.1:8787',
    tokens: [{ name: 'ops', role: 'admin', file: '/etc/kb/admin-token' }],
    tls: {
      certFile: '/etc/kb/admin.pem',
      keyFile: '/etc/kb/admin.key',
      clientCaFile: '/etc/kb/clients-ca.pem',
    },
  },
  backends: [
    {
      name: 'hsm',
      type: 'pkcs11',
      module: '/usr/lib/libsofthsm2.so',
      tokenLabel: 'kms',
      pinFile: '/etc/kb/pin',
      keyLabel: 'kek',
    },
    {
      name: 'vault',
      type: 'vault-transit',
      address: 'https://vault.example:8200',
      key: 'kek',
      tls: {
        caFile: '/etc/kb/vault-ca.pem',
        certFile: '/etc/kb/vault-client.pem',
        keyFile: '/etc/kb/vault-client.key',
      },
      auth: { method: 'token', tokenFile: '/etc/kb/vault-token' },
    },
    {
      name: 'gcp',
      type: 'gcp-kms',
      keyName: 'projects/p/locations/global/keyRings/r/cryptoKeys/k',
      endpoint: 'https://kms.internal:443',
      caFile: '/etc/kb/gcp-ca.pem',
      credentialsFile: '/etc/kb/gcp.json',
    },
    {
      name: 'azure',
      type: 'azure-keyvault',
      vaultUrl: 'https://v.vault.azure.net',
      keyName: 'kek',
      credential: {
        type: 'client-certificate',
        tenantId: 'contoso.onmicrosoft.com',
        clientId: '00000000-0000-0000-0000-000000000001',
        certificateFile: '/etc/kb/azure.pem',
      },
    },
    { name: 'escrow', type: 'escrow', publicKeyFile: '/etc/kb/escrow-public.pem' },
  ],
  failover: { order: ['hsm', 'vault', 'gcp', 'azure', 'escrow'] },
};

function withoutAdminCert(): Disk {
  const disk = goodDisk();
  delete disk['/etc/kb/admin.pem'];
  return disk;
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

/** loadConfigFile over `disk` (with the config at /etc/kb/config.yaml); logs each read. */
function load(disk: Disk, top: object = config) {
  const reads: string[] = [];
  const files: Disk = { '/etc/kb/config.yaml': JSON.stringify(top), ...disk };
  const read = (path: string): Buffer => {
    reads.push(path);
    const file = files[path];
    if (file === undefined) throw errno('ENOENT');
    if (typeof file !== 'string') throw file;
    return Buffer.from(file, 'latin1');
  };
  return { reads, load: () => loadConfigFile('/etc/kb/config.yaml', read) };
}

/** The CONFIG_INVALID message of loading `disk`. */
function problems(disk: Disk, top?: object): string {
  try {
    load(disk, top).load();
  } catch (error) {
    assert.ok(error instanceof BrokerError);
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.ok(!error.message.includes(SECRET), `a secret leaked: ${error.message}`);
    return error.message;
  }
  assert.fail('the config loaded');
}

describe('files named in the config', () => {
  it('loads when every file is there and holds what it should, serving the non-secret ones from memory', () => {
    const disk = load(goodDisk());
    const { config: loaded, readFile } = disk.load();
    assert.equal(loaded.backends.length, 5);
    const readsAtLoad = disk.reads.length;
    for (const path of [
      '/etc/kb/admin.pem',
      '/etc/kb/admin.key',
      '/etc/kb/vault-ca.pem',
      '/etc/kb/gcp-ca.pem',
      '/etc/kb/escrow-public.pem',
    ])
      assert.equal(readFile(path).toString('latin1'), goodDisk()[path]);
    assert.equal(disk.reads.length, readsAtLoad, 'a checked certificate or key was read again');
    // A secret is read again where it is used: it may have been rotated.
    assert.equal(readFile('/etc/kb/pin').toString(), `${SECRET}\n`);
    assert.equal(disk.reads.length, readsAtLoad + 1);
  });

  it('names the key, the path, the cause and the fix of a missing file', () => {
    const disk = withoutAdminCert();
    assert.equal(
      problems(disk),
      '/etc/kb/config.yaml: admin.tls.certFile: cannot read /etc/kb/admin.pem (ENOENT); create it, or correct the path',
    );
  });

  it('names an unreadable secret file and a folder given for a file', () => {
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/pin': errno('EACCES') }),
      /backends\[0\]\.pinFile: cannot read \/etc\/kb\/pin \(EACCES\); make it readable by the broker's user$/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/vault-ca.pem': errno('EISDIR') }),
      /backends\[1\]\.tls\.caFile: cannot read \/etc\/kb\/vault-ca\.pem \(EISDIR\); name a file, not a directory$/,
    );
  });

  it('refuses an empty file, a secret of only a newline among them', () => {
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/admin-token': '\n' }),
      /admin\.tokens\[0\]\.file: \/etc\/kb\/admin-token is empty; write the secret into it$/,
    );
    assert.match(
      problems({ ...goodDisk(), '/usr/lib/libsofthsm2.so': '' }),
      /backends\[0\]\.module: \/usr\/lib\/libsofthsm2\.so is empty/,
    );
  });

  it('refuses a certificate file that holds no PEM certificate, or a key where a certificate belongs', () => {
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/gcp-ca.pem': 'not a certificate' }),
      /backends\[2\]\.caFile: \/etc\/kb\/gcp-ca\.pem holds no PEM certificate; write PEM certificates \(-----BEGIN CERTIFICATE-----\) into it$/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/admin.pem': KEY }),
      /admin\.tls\.certFile: \/etc\/kb\/admin\.pem holds a private key where a certificate is expected/,
    );
    const broken = CERT.replace(/\n[A-Za-z0-9+/]{8}/, '\nAAAAAAAA');
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/clients-ca.pem': `${CERT}${broken}` }),
      /admin\.tls\.clientCaFile: .* holds a certificate that does not parse \(number 2\)/,
    );
  });

  it('refuses an escrow public key file that is not one, naming what it lacks or wrongly holds', () => {
    const [mlKemBlock = '', x25519Block = ''] = ESCROW_PUBLIC_KEY.split(/(?<=-----END PUBLIC KEY-----\n)/);
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/escrow-public.pem': mlKemBlock }),
      /backends\[4\]\.publicKeyFile: \/etc\/kb\/escrow-public\.pem lacks its x25519 PUBLIC KEY block; write an escrow public key/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/escrow-public.pem': `${x25519Block}${CA_KEY}` }),
      /publicKeyFile: .* holds a PRIVATE KEY block, only PUBLIC KEY blocks belong there/,
    );
  });

  it('refuses a key file that holds a certificate, or no key', () => {
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/vault-client.key': CERT }),
      /backends\[1\]\.tls\.keyFile: \/etc\/kb\/vault-client\.key holds a certificate where a private key is expected; write a PEM private key/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/admin.key': 'garbage' }),
      /admin\.tls\.keyFile: \/etc\/kb\/admin\.key holds no usable PEM private key/,
    );
  });

  it('checks the shape of secret credential files without quoting them', () => {
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/gcp.json': `{"private_key": "${SECRET}"` }),
      /backends\[2\]\.credentialsFile: \/etc\/kb\/gcp\.json is not JSON/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/gcp.json': JSON.stringify({ private_key: SECRET }) }),
      /is not a JSON object with a "type"/,
    );
    assert.match(
      problems({ ...goodDisk(), '/etc/kb/azure.pem': CERT }),
      /backends\[3\]\.credential\.certificateFile: \/etc\/kb\/azure\.pem holds no private key; write a PEM certificate and its private key into it/,
    );
  });

  it('reports every problem at once, one line each', () => {
    const disk = withoutAdminCert();
    const message = problems({
      ...disk,
      '/etc/kb/pin': errno('EACCES'),
      '/etc/kb/vault-token': '',
      '/etc/kb/gcp-ca.pem': KEY,
    });
    const lines = message.split('\n');
    assert.equal(lines[0], '/etc/kb/config.yaml: 4 files named in the config are not usable:');
    assert.deepEqual(
      lines.slice(1).map(line => line.trim().split(':')[0]),
      ['admin.tls.certFile', 'backends[0].pinFile', 'backends[1].auth.tokenFile', 'backends[2].caFile'],
    );
  });

  it('refuses a TLS key that is not the key of its certificate, naming both keys and paths', () => {
    assert.equal(
      problems({ ...goodDisk(), '/etc/kb/admin.key': KEY, '/etc/kb/vault-client.key': KEY }),
      [
        '/etc/kb/config.yaml: 2 files named in the config are not usable:',
        'admin.tls.keyFile: /etc/kb/admin.key is not the private key of the certificate in /etc/kb/admin.pem (admin.tls.certFile); write the key the certificate was issued for, or its certificate',
        'backends[1].tls.keyFile: /etc/kb/vault-client.key is not the private key of the certificate in /etc/kb/vault-client.pem (backends[1].tls.certFile); write the key the certificate was issued for, or its certificate',
      ].join('\n  '),
    );
  });

  it('names the secret files every user may read, with their key, path and mode, and no others', () => {
    const { config: loaded } = load(goodDisk()).load();
    const modes: Record<string, number> = {
      '/etc/kb/admin-token': 0o100644,
      '/etc/kb/pin': 0o100640, // group-readable: the operator's choice
      '/etc/kb/vault-client.key': 0o100604,
      '/etc/kb/gcp.json': 0o100444,
      '/etc/kb/admin.pem': 0o100644, // a certificate is no secret
      '/usr/lib/libsofthsm2.so': 0o100755,
    };
    assert.deepEqual(
      exposedSecretFiles(loaded, path => modes[path] ?? 0o100600),
      [
        { key: 'admin.tokens[0].file', path: '/etc/kb/admin-token', mode: '0644' },
        { key: 'backends[1].tls.keyFile', path: '/etc/kb/vault-client.key', mode: '0604' },
        { key: 'backends[2].credentialsFile', path: '/etc/kb/gcp.json', mode: '0444' },
      ],
    );
  });

  it('reads a file named twice once, and skips the files of a disabled admin API', () => {
    const disk = load(
      { ...goodDisk(), '/etc/kb/admin.pem': errno('ENOENT') },
      {
        ...config,
        admin: { ...config.admin, enabled: false },
      },
    );
    disk.load();
    assert.ok(!disk.reads.includes('/etc/kb/admin.pem'));
    const shared = structuredClone(config);
    Object.assign(shared.backends[1] as object, { tls: { caFile: '/etc/kb/clients-ca.pem' } });
    const twice = load(goodDisk(), shared);
    twice.load();
    assert.equal(twice.reads.filter(path => path === '/etc/kb/clients-ca.pem').length, 1);
  });

  it('covers every path option of every backend kind', () => {
    for (const kind of backendKinds) {
      assert.deepEqual(
        pathOptions(kind.schema).sort(),
        Object.keys(kind.files).sort(),
        `${kind.type}: a key that names a file is not declared in its descriptor's files`,
      );
    }
  });

  it("checks the shared state's etcd files, kubeadm's where the config names none, and only with `cluster`", () => {
    const withEtcd = { ...config, etcd: { endpoints: ['https://127.0.0.1:2379'] } };
    // Without `cluster`, serve does not talk to etcd: the scan reads these files itself.
    assert.doesNotThrow(() => load(goodDisk(), withEtcd).load());
    const message = problems(goodDisk(), { ...withEtcd, cluster: { name: 'prod' } });
    assert.match(message, /etcd\.caFile: cannot read \/etc\/kubernetes\/pki\/etcd\/ca\.crt \(ENOENT\)/);
    assert.match(message, /etcd\.certFile: cannot read \/etc\/kubernetes\/pki\/apiserver-etcd-client\.crt/);
    assert.match(message, /etcd\.keyFile: cannot read \/etc\/kubernetes\/pki\/apiserver-etcd-client\.key/);
  });

  it('keeps a missing config file the error it was', () => {
    assert.throws(
      () =>
        loadConfigFile('/nowhere/config.yaml', () => {
          throw errno('ENOENT');
        }),
      brokerError('CONFIG_INVALID', 'cannot read config file /nowhere/config.yaml: ENOENT'),
    );
  });
});

/** Dotted keys of `schema` whose value is an absolute path. */
function pathOptions(schema: TSchema, prefix = ''): string[] {
  if (schema.pattern === absolutePath.pattern) return [prefix];
  const properties = (schema as Partial<TObject>).properties ?? {};
  return Object.entries(properties).flatMap(([key, child]) =>
    pathOptions(child, prefix === '' ? key : `${prefix}.${key}`),
  );
}
