// The files a config names, read and checked when the config is loaded, so that a missing
// CA bundle or an unreadable key stops `serve` at once, naming the key to fix, instead of
// surfacing when a backend opens or the admin API listens. Every problem is reported at once.
// Secret files are only checked (readable, not empty, of the right shape): their users read
// them again, since they may be rotated. No message ever quotes a file's contents.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { statSync } from 'node:fs';
import type { FileKind } from '../backends/backend-kind.ts';
import { backendKind } from '../backends/kinds.ts';
import { BrokerError } from '../errors.ts';
import { readPublicKey } from '../escrow/key-files.ts';
import type { FileReader } from '../file-reader.ts';
import { KUBEADM_ETCD_FILES } from './kubeadm-files.ts';
import type { BrokerConfig } from './schema.ts';

/** A file the config names: the key that names it (`backends[0].tls.caFile`), its path, its kind. */
interface NamedFile {
  readonly key: string;
  readonly path: string;
  readonly kind: FileKind;
}

/** Contents of the non-secret files, by path. */
export type CheckedFiles = ReadonlyMap<string, Buffer>;

type ShapeCheck = (text: string, contents: Buffer) => string | undefined;

/** What each kind must hold (named in messages), how that is checked, and whether it is kept. */
interface KindRules {
  readonly holds: string;
  readonly check?: ShapeCheck;
  readonly keep?: true;
  /** A secret: others may not read it (checked by exposedSecretFiles). */
  readonly secret?: true;
}

const kinds: Record<FileKind, KindRules> = {
  'pem-certificates': {
    holds: 'PEM certificates (-----BEGIN CERTIFICATE-----)',
    check: certificatesProblem,
    keep: true,
  },
  'pem-private-key': {
    holds: 'a PEM private key (-----BEGIN PRIVATE KEY-----)',
    check: privateKeyProblem,
    keep: true,
    secret: true,
  },
  'pem-certificate-and-key': {
    holds: 'a PEM certificate and its private key',
    check: (text, contents) =>
      certificatesProblem(text) ??
      (/PRIVATE KEY-----/.test(text) ? privateKeyProblem(text, contents) : 'holds no private key'),
    secret: true,
  },
  'json-credentials': {
    holds: 'a JSON credentials object with a "type"',
    check: jsonCredentialsProblem,
    secret: true,
  },
  secret: { holds: 'the secret', secret: true },
  library: { holds: 'the library' },
  'escrow-public-key': {
    holds: 'an escrow public key (the escrow-public.pem `kms-broker escrow init` writes)',
    check: text => {
      const read = readPublicKey(text);
      return 'problem' in read ? read.problem : undefined;
    },
    keep: true,
  },
};

/**
 * Reads and checks every file `config` names; throws one CONFIG_INVALID listing every
 * problem. Returns the contents of the non-secret files for their users.
 */
export function checkConfigFiles(config: BrokerConfig, read: FileReader, source: string): CheckedFiles {
  const reads = new Map<string, ReadResult>();
  const kept = new Map<string, Buffer>();
  const problems: string[] = [];
  const files = namedFiles(config);
  for (const file of files) {
    // One read per path, however many keys name it.
    let result = reads.get(file.path);
    if (result === undefined) {
      result = readResult(read, file.path);
      reads.set(file.path, result);
    }
    const problem = 'error' in result ? readProblem(file, result.error) : shapeProblem(file, result.contents);
    if (problem !== undefined) problems.push(`${file.key}: ${problem}`);
    else if (kinds[file.kind].keep === true && 'contents' in result) kept.set(file.path, result.contents);
  }
  problems.push(...keyPairProblems(files, kept));
  if (problems.length === 1) throw new BrokerError('CONFIG_INVALID', `${source}: ${problems[0]}`);
  if (problems.length > 1) {
    throw new BrokerError(
      'CONFIG_INVALID',
      `${source}: ${problems.length} files named in the config are not usable:\n  ${problems.join('\n  ')}`,
    );
  }
  return kept;
}

/**
 * A TLS key beside the certificate it must belong to (`tls.keyFile` and `tls.certFile`):
 * a pair that does not match otherwise fails only when a listener or a client first uses it,
 * with a message from OpenSSL that names neither.
 */
function keyPairProblems(files: readonly NamedFile[], kept: CheckedFiles): string[] {
  const problems: string[] = [];
  for (const keyFile of files) {
    if (keyFile.kind !== 'pem-private-key' || !keyFile.key.endsWith('keyFile')) continue;
    const certKey = keyFile.key.replace(/keyFile$/, 'certFile');
    const certFile = files.find(file => file.key === certKey);
    const key = kept.get(keyFile.path);
    const cert = certFile === undefined ? undefined : kept.get(certFile.path);
    if (certFile === undefined || key === undefined || cert === undefined) continue;
    if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
      problems.push(
        `${keyFile.key}: ${keyFile.path} is not the private key of the certificate in ${certFile.path} (${certKey}); write the key the certificate was issued for, or its certificate`,
      );
    }
  }
  return problems;
}

/** A secret file that every user of the host may read. */
export interface ExposedFile {
  readonly key: string;
  readonly path: string;
  /** Its permission bits, in octal (`0644`). */
  readonly mode: string;
}

/**
 * The secret files (PINs, tokens, private keys, credentials) the config names that others
 * may read. Reported, not refused: a Kubernetes Secret volume is 0644 unless told otherwise,
 * and refusing would stop the apiserver's KMS plugin over a mode no one else may reach.
 */
export function exposedSecretFiles(
  config: BrokerConfig,
  modeOf: (path: string) => number = path => statSync(path).mode,
): ExposedFile[] {
  const exposed: ExposedFile[] = [];
  for (const file of namedFiles(config)) {
    if (kinds[file.kind].secret !== true) continue;
    let mode: number;
    try {
      mode = modeOf(file.path);
    } catch {
      continue; // Checked readable at load; gone now, its user will say so.
    }
    if ((mode & 0o004) !== 0)
      exposed.push({ key: file.key, path: file.path, mode: (mode & 0o7777).toString(8).padStart(4, '0') });
  }
  return exposed;
}

export { KUBEADM_ETCD_FILES } from './kubeadm-files.ts';

/**
 * The TLS files of the shared state's etcd, kubeadm's where the config names none; undefined
 * when no cluster is configured or every endpoint is plain http.
 */
export function clusterEtcdFiles(
  config: BrokerConfig,
): { caFile: string; certFile: string; keyFile: string } | undefined {
  const { etcd } = config;
  if (config.cluster === undefined || etcd === undefined) return undefined;
  if (!etcd.endpoints.some(endpoint => endpoint.startsWith('https:'))) return undefined;
  return {
    caFile: etcd.caFile ?? KUBEADM_ETCD_FILES.caFile,
    certFile: etcd.certFile ?? KUBEADM_ETCD_FILES.certFile,
    keyFile: etcd.keyFile ?? KUBEADM_ETCD_FILES.keyFile,
  };
}

function namedFiles(config: BrokerConfig): NamedFile[] {
  const files: NamedFile[] = [];
  const etcdFiles = clusterEtcdFiles(config);
  if (etcdFiles !== undefined) {
    files.push({ key: 'etcd.caFile', path: etcdFiles.caFile, kind: 'pem-certificates' });
    files.push({ key: 'etcd.certFile', path: etcdFiles.certFile, kind: 'pem-certificates' });
    files.push({ key: 'etcd.keyFile', path: etcdFiles.keyFile, kind: 'pem-private-key' });
  }
  const { admin } = config;
  // A disabled admin API reads none of its files.
  if (admin.enabled) {
    if (admin.tls !== undefined) {
      const { certFile, keyFile, clientCaFile } = admin.tls;
      files.push({ key: 'admin.tls.certFile', path: certFile, kind: 'pem-certificates' });
      files.push({ key: 'admin.tls.keyFile', path: keyFile, kind: 'pem-private-key' });
      if (clientCaFile !== undefined)
        files.push({ key: 'admin.tls.clientCaFile', path: clientCaFile, kind: 'pem-certificates' });
    }
    admin.tokens.forEach((token, index) =>
      files.push({ key: `admin.tokens[${index}].file`, path: token.file, kind: 'secret' }),
    );
  }
  config.backends.forEach((backend, index) => {
    for (const [key, kind] of Object.entries(backendKind(backend.type).files)) {
      const path = valueAt(backend, key);
      if (typeof path === 'string') files.push({ key: `backends[${index}].${key}`, path, kind });
    }
  });
  return files;
}

/** The value at a dotted path (`tls.caFile`), or undefined where a part is absent. */
function valueAt(value: object, path: string): unknown {
  return path
    .split('.')
    .reduce<unknown>(
      (at, part) =>
        typeof at === 'object' && at !== null ? (at as Record<string, unknown>)[part] : undefined,
      value,
    );
}

type ReadResult = { readonly contents: Buffer } | { readonly error: NodeJS.ErrnoException };

function readResult(read: FileReader, path: string): ReadResult {
  try {
    return { contents: read(path) };
  } catch (error) {
    return { error: error as NodeJS.ErrnoException };
  }
}

function readProblem({ path }: NamedFile, error: NodeJS.ErrnoException): string {
  const code = error.code ?? 'error';
  const fix =
    code === 'ENOENT'
      ? 'create it, or correct the path'
      : code === 'EACCES' || code === 'EPERM'
        ? "make it readable by the broker's user"
        : code === 'EISDIR'
          ? 'name a file, not a directory'
          : 'check the file and its folder';
  return `cannot read ${path} (${code}); ${fix}`;
}

function shapeProblem({ path, kind }: NamedFile, contents: Buffer): string | undefined {
  const { holds, check } = kinds[kind];
  const problem = isBlank(contents) ? 'is empty' : check?.(contents.toString('utf8'), contents);
  return problem === undefined ? undefined : `${path} ${problem}; write ${holds} into it`;
}

/** Whitespace only (`echo > pin` writes a newline); stops at the first other byte. */
function isBlank(contents: Buffer): boolean {
  return !contents.some(byte => byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d);
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

function certificatesProblem(text: string): string | undefined {
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    return /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)
      ? 'holds a private key where a certificate is expected'
      : 'holds no PEM certificate';
  }
  const broken = blocks.findIndex(block => !parses(() => new X509Certificate(block)));
  return broken === -1 ? undefined : `holds a certificate that does not parse (number ${broken + 1})`;
}

function privateKeyProblem(text: string, contents: Buffer): string | undefined {
  try {
    createPrivateKey(contents);
    return undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE')
      return 'holds an encrypted private key, and the broker takes no passphrase';
    return /-----BEGIN CERTIFICATE-----/.test(text) && !/PRIVATE KEY-----/.test(text)
      ? 'holds a certificate where a private key is expected'
      : 'holds no usable PEM private key';
  }
}

function jsonCredentialsProblem(text: string): string | undefined {
  let json: unknown;
  // JSON.parse quotes the text it fails on: its message must not reach the operator's logs.
  if (!parses(() => (json = JSON.parse(text)))) return 'is not JSON';
  const type = typeof json === 'object' && json !== null ? (json as { type?: unknown }).type : undefined;
  return typeof type === 'string' ? undefined : 'is not a JSON object with a "type"';
}

function parses(parse: () => unknown): boolean {
  try {
    parse();
    return true;
  } catch {
    return false;
  }
}
