// Turns an object's decrypted bytes, as kube-apiserver stores them, back into something an
// operator can apply. Built-in types are stored as "k8s\0" || runtime.Unknown{typeMeta, raw}
// with `raw` the type's protobuf: decoding those needs each type's schema, so only Secret and
// ConfigMap (what `recover` is for) become YAML manifests; any other protobuf object is kept
// as its raw bytes (.pb) for a tool that has the type registry. Custom resources are stored
// as JSON and become YAML. Server-set metadata (uid, resourceVersion, timestamps,
// managedFields, ownerReferences) is dropped, so `kubectl apply` creates the object anew.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { stringify } from 'yaml';

export type Manifest =
  /** A YAML manifest `kubectl apply -f` accepts. */
  | { readonly format: 'yaml'; readonly text: string; readonly kind: string }
  /** A protobuf object of a type without a schema here: its stored bytes, "k8s\0" included. */
  | { readonly format: 'pb'; readonly bytes: Buffer; readonly kind: string };

const PROTOBUF_MAGIC = Buffer.from('k8s\0', 'latin1');
const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/k8s-objects.proto', import.meta.url)),
  { keepCase: true },
);
const Unknown = root.lookupType('kmsbroker.k8s.Unknown');
const types = new Map([
  ['v1/Secret', root.lookupType('kmsbroker.k8s.Secret')],
  ['v1/ConfigMap', root.lookupType('kmsbroker.k8s.ConfigMap')],
]);

interface UnknownMessage {
  typeMeta?: { apiVersion?: string; kind?: string };
  raw?: Buffer;
}

interface DecodedObject {
  metadata?: Record<string, unknown>;
  data?: Record<string, Buffer | string>;
  binaryData?: Record<string, Buffer>;
  type?: string;
  immutable?: boolean;
}

/** Server-set metadata a manifest must not carry. */
const SERVER_SET = ['uid', 'resourceVersion', 'creationTimestamp', 'managedFields', 'selfLink', 'generation'];

export function toManifest(plaintext: Buffer): Manifest {
  if (plaintext.subarray(0, PROTOBUF_MAGIC.length).equals(PROTOBUF_MAGIC)) return fromProtobuf(plaintext);
  let object: unknown;
  try {
    object = JSON.parse(plaintext.toString('utf8'));
  } catch {
    throw new Error('neither Kubernetes protobuf nor JSON');
  }
  if (typeof object !== 'object' || object === null || Array.isArray(object))
    throw new Error('JSON that is no object');
  const record = object as Record<string, unknown>;
  const metadata = record.metadata;
  if (typeof metadata === 'object' && metadata !== null)
    for (const field of SERVER_SET) delete (metadata as Record<string, unknown>)[field];
  delete record.status;
  return {
    format: 'yaml',
    text: stringify(record),
    kind: typeof record.kind === 'string' ? record.kind : 'unknown',
  };
}

function fromProtobuf(plaintext: Buffer): Manifest {
  const unknown = Unknown.toObject(Unknown.decode(plaintext.subarray(PROTOBUF_MAGIC.length)), {
    bytes: Buffer,
  }) as UnknownMessage;
  const apiVersion = unknown.typeMeta?.apiVersion ?? '';
  const kind = unknown.typeMeta?.kind ?? '';
  const type = types.get(`${apiVersion}/${kind}`);
  if (type === undefined || unknown.raw === undefined)
    return { format: 'pb', bytes: plaintext, kind: kind || 'unknown' };
  const object = type.toObject(type.decode(unknown.raw), { bytes: Buffer }) as DecodedObject;
  const manifest: Record<string, unknown> = { apiVersion, kind, metadata: metadataOf(object.metadata ?? {}) };
  if (object.type !== undefined && object.type !== '') manifest.type = object.type;
  if (object.immutable === true) manifest.immutable = true;
  if (object.data !== undefined && Object.keys(object.data).length > 0)
    manifest.data = mapValues(object.data, value =>
      Buffer.isBuffer(value) ? value.toString('base64') : value,
    );
  if (object.binaryData !== undefined && Object.keys(object.binaryData).length > 0)
    manifest.binaryData = mapValues(object.binaryData, value => value.toString('base64'));
  return { format: 'yaml', text: stringify(manifest), kind };
}

function metadataOf(meta: Record<string, unknown>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const field of ['name', 'generateName', 'namespace', 'labels', 'annotations', 'finalizers']) {
    const value = meta[field];
    const empty =
      value === undefined ||
      value === '' ||
      (Array.isArray(value) && value.length === 0) ||
      (typeof value === 'object' && value !== null && Object.keys(value).length === 0);
    if (!empty) kept[field] = value;
  }
  return kept;
}

function mapValues<T>(record: Record<string, T>, map: (value: T) => string): Record<string, string> {
  const keys = Object.keys(record).sort();
  return Object.fromEntries(keys.map(key => [key, map(record[key] as T)]));
}
