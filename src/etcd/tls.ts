// The TLS client credentials for etcd, as kubeadm lays the files out: each file read and the
// three checked to belong together before any connection, so a wrong path or a mismatched
// key is reported as such and not as an unreachable etcd.
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { BrokerError } from '../errors.ts';
import { advise, type EtcdSettingNames } from './names.ts';

export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export function tlsCredentials(files: EtcdTlsFiles, names: EtcdSettingNames): grpc.ChannelCredentials {
  const ca = readTlsFile(names.caFile, files.caFile, "the CA that signed etcd's serving certificate");
  const cert = readTlsFile(names.certFile, files.certFile, 'a client certificate etcd trusts');
  const key = readTlsFile(names.keyFile, files.keyFile, `the private key of ${names.certFile}`);
  try {
    createSecureContext({ ca, cert, key });
  } catch (error) {
    throw new BrokerError(
      'ETCD_TLS_FILE_UNREADABLE',
      `${names.caFile} ${files.caFile}, ${names.certFile} ${files.certFile}, ${names.keyFile} ${files.keyFile}: not a PEM CA certificate, client certificate and its matching private key (${opensslReason(error)}); on kubeadm use /etc/kubernetes/pki/etcd/ca.crt and /etc/kubernetes/pki/apiserver-etcd-client.{crt,key}`,
    );
  }
  return grpc.credentials.createSsl(ca, key, cert);
}

function readTlsFile(name: string, path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    const fix =
      code === 'EACCES' || code === 'EPERM'
        ? 'run as a user that may read it (root on a kubeadm control-plane node)'
        : advise(name, what);
    throw new BrokerError('ETCD_TLS_FILE_UNREADABLE', `${name}: cannot read ${path} (${code}); ${fix}`);
  }
}

/** OpenSSL's code for a bad PEM or a mismatched key: a name, never the key material. */
function opensslReason(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^[A-Z0-9_]+$/.test(code) ? code : 'invalid';
}
