// An etcd that serves only TLS and accepts only clients its CA signed, with a client
// certificate for the test and a second CA that signed nothing etcd trusts (for the refusals).
import { join } from 'node:path';
import { startEtcd, type ClientTls, type Etcd } from './kube-etcd.ts';
import { createCa, issueCertificate } from './x509.ts';

export interface TlsEtcd {
  readonly etcd: Etcd;
  /** What the test's client presents: etcd's CA, and a certificate etcd trusts with its key. */
  readonly client: ClientTls;
  /** A CA etcd does not know; a certificate it signed is in `stranger`. */
  readonly otherCa: string;
  readonly stranger: { readonly certFile: string; readonly keyFile: string };
}

export async function startTlsEtcd(dir: string, clientName: string): Promise<TlsEtcd> {
  const ca = createCa(join(dir, 'ca'), 'etcd-ca');
  const server = issueCertificate(ca, join(dir, 'server'), {
    commonName: 'etcd',
    usage: 'server',
    altNames: ['IP:127.0.0.1', 'DNS:localhost'],
  });
  const issued = issueCertificate(ca, join(dir, 'client'), { commonName: clientName });
  const other = createCa(join(dir, 'other'), 'another CA');
  const stranger = issueCertificate(other, join(dir, 'stranger'), { commonName: 'stranger' });
  const client = { caFile: ca.certFile, certFile: issued.certFile, keyFile: issued.keyFile };
  const etcd = await startEtcd(dir, { server, clientCaFile: ca.certFile, client });
  return {
    etcd,
    client,
    otherCa: other.certFile,
    stranger: { certFile: stranger.certFile, keyFile: stranger.keyFile },
  };
}
