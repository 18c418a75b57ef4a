// Writing raw values into a test etcd and reading its revision, through etcd's v3 JSON gateway
// (the product's etcd client only reads).
import { etcdJson, type ClientTls } from './kube-etcd.ts';

/** etcd's default --max-txn-ops. */
const OPS_PER_TXN = 128;

/** Puts every entry, 128 to a transaction. */
export async function putAll(
  url: string,
  entries: readonly (readonly [string, Buffer])[],
  tls?: ClientTls,
): Promise<void> {
  for (let start = 0; start < entries.length; start += OPS_PER_TXN) {
    const success = entries.slice(start, start + OPS_PER_TXN).map(([key, value]) => ({
      request_put: { key: Buffer.from(key, 'utf8').toString('base64'), value: value.toString('base64') },
    }));
    await etcdJson(`${url}/v3/kv/txn`, 'POST', { success }, tls);
  }
}

/** The store's current revision (a read; it does not change it). */
export async function etcdRevision(url: string, tls?: ClientTls): Promise<string> {
  const answer = (await etcdJson(
    `${url}/v3/kv/range`,
    'POST',
    { key: Buffer.from('\0').toString('base64'), count_only: true },
    tls,
  )) as { header?: { revision?: string } };
  const revision = answer.header?.revision;
  if (revision === undefined) throw new Error(`no revision in ${JSON.stringify(answer)}`);
  return revision;
}
