// Test certificates made with the openssl CLI (node:crypto reads X.509 but cannot issue it):
// a throwaway CA and leaf certificates it signs, each as PEM files in a folder the caller owns.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type KeyType = 'ec' | 'rsa';

export interface CertificateAuthority {
  readonly certFile: string;
  readonly keyFile: string;
  /** The CA certificate, PEM. */
  readonly pem: string;
}

export interface IssuedCertificate {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface IssueOptions {
  readonly commonName: string;
  /** File name stem in the folder: `<name>.pem` and `<name>.key`. Default: the usage. */
  readonly name?: string;
  readonly usage?: 'client' | 'server';
  /** subjectAltName entries for a server certificate, e.g. ['IP:127.0.0.1', 'DNS:localhost']. */
  readonly altNames?: readonly string[];
  readonly keyType?: KeyType;
  readonly days?: number;
}

function openssl(args: readonly string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

function keyArgs(keyType: KeyType): string[] {
  return keyType === 'ec'
    ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']
    : ['-newkey', 'rsa:2048'];
}

/** A self-signed CA (key unencrypted, PKCS#8) written to `<dir>/ca.pem` and `<dir>/ca.key`. */
export function createCa(
  dir: string,
  commonName = 'kms-broker test CA',
  keyType: KeyType = 'ec',
): CertificateAuthority {
  mkdirSync(dir, { recursive: true });
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca.key');
  // `req -x509` adds openssl.cnf's v3_ca section: basicConstraints CA:TRUE, SKI, AKI.
  openssl([
    'req',
    '-x509',
    ...keyArgs(keyType),
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    `/CN=${commonName}`,
  ]);
  return { certFile, keyFile, pem: readFileSync(certFile, 'utf8') };
}

/** A leaf certificate signed by `ca`, for TLS client (default) or server authentication. */
export function issueCertificate(
  ca: CertificateAuthority,
  dir: string,
  options: IssueOptions,
): IssuedCertificate {
  mkdirSync(dir, { recursive: true });
  const usage = options.usage ?? 'client';
  const stem = options.name ?? usage;
  const certFile = join(dir, `${stem}.pem`);
  const keyFile = join(dir, `${stem}.key`);
  const csrFile = join(dir, `${stem}.csr`);
  const extFile = join(dir, `${stem}.ext`);
  const extensions = [
    'basicConstraints=critical,CA:FALSE',
    `keyUsage=critical,digitalSignature${options.keyType === 'rsa' ? ',keyEncipherment' : ''}`,
    `extendedKeyUsage=${usage === 'client' ? 'clientAuth' : 'serverAuth'}`,
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid',
  ];
  if (options.altNames !== undefined && options.altNames.length > 0)
    extensions.push(`subjectAltName=${options.altNames.join(',')}`);
  writeFileSync(extFile, extensions.join('\n') + '\n');
  openssl([
    'req',
    '-new',
    ...keyArgs(options.keyType ?? 'ec'),
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    csrFile,
    '-subj',
    `/CN=${options.commonName}`,
  ]);
  openssl([
    'x509',
    '-req',
    '-in',
    csrFile,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-set_serial',
    `0x${randomBytes(16).toString('hex')}`,
    '-days',
    String(options.days ?? 2),
    '-extfile',
    extFile,
    '-out',
    certFile,
  ]);
  return { certFile, keyFile };
}
