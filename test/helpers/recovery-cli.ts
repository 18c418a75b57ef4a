// `kms-broker drill` and `recover` on a snapshot, with the etcd tools the e2e build made
// (etcdutl restores the snapshot, etcd serves it on loopback): the arguments every test starts with.
import { dirname } from 'node:path';
import { kubeBinary } from './kube-process.ts';

export const ETCD_BIN_DIR = dirname(kubeBinary('etcd'));

export function drillArgs(config: string, snapshot: string): string[] {
  return ['drill', '--config', config, '--snapshot', snapshot, '--etcd-bin-dir', ETCD_BIN_DIR];
}

export function recoverArgs(snapshot: string, out: string): string[] {
  return ['recover', '--snapshot', snapshot, '--etcd-bin-dir', ETCD_BIN_DIR, '--out', out];
}
