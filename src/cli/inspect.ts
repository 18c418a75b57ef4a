// `kms-broker inspect`: explains one stored value (from etcd by key, a file or stdin) and
// whether the broker it reaches could unwrap each wrap now. Exit codes: 0 explained, 1 the value
// cannot be read or is no value kube-apiserver stored, 2 usage (the caller's `usage`).
import { readFileSync } from 'node:fs';
import { BrokerError, isBrokerError } from '../errors.ts';
import { explain, type Explanation } from '../inspect/explain.ts';
import { renderExplanation } from '../inspect/render.ts';
import { lookUpBroker, verdictFor, type BrokerLookup } from '../inspect/unwrap-check.ts';
import { createEtcdClient } from '../usage/etcd-client.ts';
import { readStoredValue, type StoredReading } from '../usage/stored-format.ts';
import { request, resolveTarget } from './admin-client.ts';
import type { OutputOptions } from './admin-commands.ts';
import { table } from './table.ts';
import { checkedLocation, type EtcdLocation } from './usage-options.ts';

export interface InspectOptions extends OutputOptions, EtcdLocation {
  readonly fromEtcd?: string;
  readonly file?: string;
}

const EXIT_NOT_EXPLAINED = 1;
/** etcd's largest request is 1.5 MiB by default; no stored value comes near this. */
const MAX_INPUT_BYTES = 16 * 1024 * 1024;

export async function inspectCommand(
  stdin: string | undefined,
  options: InspectOptions,
  usage: (message: string) => never,
): Promise<number> {
  const sources = [options.fromEtcd, options.file, stdin].filter(source => source !== undefined);
  if (stdin !== undefined && stdin !== '-') usage(`error: unexpected argument '${stdin}'; '-' reads stdin`);
  if (sources.length !== 1)
    usage('error: say where the value is: exactly one of --from-etcd <key>, --file <path> or - (stdin)');
  const { source, value } = await readInput(options);
  const reading = readStoredValue(value);
  const lookup = await brokerLookup(options, reading);
  const explanation = explain(source, value, reading, wrap => verdictFor(lookup, wrap));
  process.stdout.write(
    options.json === true
      ? `${JSON.stringify(withBroker(explanation, lookup), null, 2)}\n`
      : renderExplanation(explanation, table) + brokerNote(explanation, lookup),
  );
  return explanation.format === undefined ? EXIT_NOT_EXPLAINED : 0;
}

async function readInput(options: InspectOptions): Promise<{ source: string; value: Buffer }> {
  if (options.fromEtcd !== undefined) return readEtcdKey(options.fromEtcd, options);
  if (options.file !== undefined) {
    try {
      return { source: `file ${options.file}`, value: bounded(readFileSync(options.file)) };
    } catch (error) {
      if (isBrokerError(error)) throw error;
      const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new BrokerError(
        'INPUT_UNREADABLE',
        `cannot read ${options.file} (${code}); name a file holding one value as etcd stores it`,
      );
    }
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_INPUT_BYTES) break;
    chunks.push(chunk);
  }
  return { source: 'stdin', value: bounded(Buffer.concat(chunks), size) };
}

function bounded(value: Buffer, size = value.length): Buffer {
  if (size > MAX_INPUT_BYTES)
    throw new BrokerError(
      'INPUT_UNREADABLE',
      `the input is over ${MAX_INPUT_BYTES} bytes, larger than any value etcd stores; give one value`,
    );
  return value;
}

/** One key, read-only, at etcd's newest revision; a key without a leading / is under --prefix. */
async function readEtcdKey(
  name: string,
  options: InspectOptions,
): Promise<{ source: string; value: Buffer }> {
  const location = checkedLocation(options);
  const key = name.startsWith('/') ? name : `${location.prefix}${name}`;
  const client = createEtcdClient({ endpoints: location.endpoints, tls: location.tls });
  try {
    const { kvs } = await client.range({
      key: Buffer.from(key, 'utf8'),
      rangeEnd: Buffer.alloc(0),
      limit: 1,
      revision: '0',
    });
    const found = kvs[0];
    if (found === undefined) {
      const parent = key.slice(0, key.lastIndexOf('/') + 1);
      throw new BrokerError(
        'ETCD_KEY_NOT_FOUND',
        `etcd has no key ${key}; list the keys there with \`etcdctl get --prefix --keys-only ${parent}\` and check --prefix (the apiserver's --etcd-prefix)`,
      );
    }
    return { source: `etcd key ${key}`, value: found.value };
  } finally {
    client.close();
  }
}

/** Asks the broker only when there are broker wraps to judge; never fails the command. */
async function brokerLookup(options: InspectOptions, reading: StoredReading): Promise<BrokerLookup> {
  if (!('broker' in reading) || reading.broker.owner !== 'broker')
    return { reached: false, reason: 'nothing to ask it' };
  let target;
  try {
    target = await resolveTarget(options, 'viewer');
  } catch (error) {
    return { reached: false, reason: isBrokerError(error) ? error.message : 'no admin API given' };
  }
  return lookUpBroker(path => request(target, 'GET', path));
}

function withBroker(explanation: Explanation, lookup: BrokerLookup): object {
  if (explanation.broker?.owner !== 'broker') return explanation;
  return {
    ...explanation,
    brokerReached: lookup.reached,
    ...(!lookup.reached && { brokerNotReached: lookup.reason }),
  };
}

function brokerNote(explanation: Explanation, lookup: BrokerLookup): string {
  if (explanation.broker?.owner !== 'broker' || lookup.reached) return '';
  return `\nno broker reached (${lookup.reason}): give --admin and --token-file, or --config, to say whether it unwraps\n`;
}
