// Stored objects back to manifests: a Secret and a ConfigMap encoded field by field as
// kube-apiserver stores them ("k8s\0" || runtime.Unknown{typeMeta, raw}), with the field numbers
// of k8s.io/api and apimachinery's generated.proto written here by hand (not from the .proto the
// decoder uses); server-set metadata is dropped; other types stay raw; JSON becomes YAML.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import protobuf from 'protobufjs';
import { parse } from 'yaml';
import { toManifest } from '../../src/recovery/k8s-object.ts';

type Field = [number, string | Buffer | Field[] | boolean];

/** Protobuf of `fields`: strings and bytes length-delimited, nested messages, bools as varints. */
function encode(fields: readonly Field[]): Buffer {
  const writer = protobuf.Writer.create();
  for (const [number, value] of fields) {
    if (typeof value === 'boolean') writer.uint32((number << 3) | 0).bool(value);
    else if (Array.isArray(value)) writer.uint32((number << 3) | 2).bytes(encode(value));
    else writer.uint32((number << 3) | 2).bytes(Buffer.isBuffer(value) ? value : Buffer.from(value));
  }
  return Buffer.from(writer.finish());
}

const entry = (number: number, key: string, value: string | Buffer): Field => [
  number,
  [
    [1, key],
    [2, value],
  ],
];

function stored(apiVersion: string, kind: string, raw: Buffer): Buffer {
  const unknown = encode([
    [
      1,
      [
        [1, apiVersion],
        [2, kind],
      ],
    ],
    [2, raw],
    [4, 'application/vnd.kubernetes.protobuf'],
  ]);
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), unknown]);
}

const objectMeta: Field = [
  1,
  [
    [1, 'db-password'], // name
    [3, 'prod'], // namespace
    [5, '6f1c-uid'], // uid
    [6, '4711'], // resourceVersion
    [8, [[1, '1700000000']]], // creationTimestamp (Time.seconds as bytes here: only its presence matters)
    entry(11, 'app', 'db'), // labels
    entry(12, 'owner', 'team-a'), // annotations
    [
      17,
      [
        [1, 'kubectl'],
        [2, 'Update'],
      ],
    ], // managedFields
  ],
];

describe('recovery: stored objects to manifests', () => {
  it('turns a stored Secret into a manifest kubectl apply accepts, without server-set metadata', () => {
    const secret = encode([
      objectMeta,
      entry(2, 'password', Buffer.from([0, 1, 2, 255])),
      entry(2, 'user', Buffer.from('admin')),
      [3, 'Opaque'],
      [5, true],
    ]);
    const manifest = toManifest(stored('v1', 'Secret', secret));
    assert.equal(manifest.format, 'yaml');
    assert.deepEqual(manifest.format === 'yaml' && parse(manifest.text), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'db-password',
        namespace: 'prod',
        labels: { app: 'db' },
        annotations: { owner: 'team-a' },
      },
      type: 'Opaque',
      immutable: true,
      data: {
        password: Buffer.from([0, 1, 2, 255]).toString('base64'),
        user: Buffer.from('admin').toString('base64'),
      },
    });
  });

  it('turns a stored ConfigMap into a manifest, with its binary data', () => {
    const configMap = encode([objectMeta, entry(2, 'mode', 'fast'), entry(3, 'blob', Buffer.from([9, 9]))]);
    const manifest = toManifest(stored('v1', 'ConfigMap', configMap));
    assert.deepEqual(manifest.format === 'yaml' && parse(manifest.text), {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'db-password',
        namespace: 'prod',
        labels: { app: 'db' },
        annotations: { owner: 'team-a' },
      },
      data: { mode: 'fast' },
      binaryData: { blob: 'CQk=' },
    });
  });

  it('keeps another built-in type as its stored bytes, and turns JSON (custom resources) into YAML', () => {
    const pod = stored('v1', 'Pod', encode([objectMeta]));
    assert.deepEqual(toManifest(pod), { format: 'pb', bytes: pod, kind: 'Pod' });
    const json = {
      apiVersion: 'x.io/v1',
      kind: 'Widget',
      metadata: { name: 'w', uid: 'u', resourceVersion: '1' },
      spec: { a: 1 },
      status: { ok: true },
    };
    const manifest = toManifest(Buffer.from(JSON.stringify(json)));
    assert.deepEqual(manifest.format === 'yaml' && parse(manifest.text), {
      apiVersion: 'x.io/v1',
      kind: 'Widget',
      metadata: { name: 'w' },
      spec: { a: 1 },
    });
    assert.throws(() => toManifest(Buffer.from('not an object')), /neither Kubernetes protobuf nor JSON/);
  });
});
