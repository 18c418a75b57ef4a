// A Secret as kube-apiserver serializes it for storage, "k8s\0" || runtime.Unknown{typeMeta,
// raw: Secret}, encoded field by field with the numbers of k8s.io/api core/v1 and apimachinery's
// generated.proto (metadata 1 {name 1, namespace 3, uid 5, resourceVersion 6, labels 11}, data 2,
// type 3): what `recover` must turn back into a manifest.
import { randomUUID } from 'node:crypto';
import protobuf from 'protobufjs';

function field(writer: protobuf.Writer, number: number, value: string | Uint8Array): void {
  writer.uint32((number << 3) | 2);
  if (typeof value === 'string') writer.string(value);
  else writer.bytes(value);
}

function message(build: (writer: protobuf.Writer) => void): Uint8Array {
  const writer = protobuf.Writer.create();
  build(writer);
  return writer.finish();
}

export function storedSecret(
  namespace: string,
  name: string,
  data: Readonly<Record<string, Buffer>>,
): Buffer {
  const metadata = message(w => {
    field(w, 1, name);
    field(w, 3, namespace);
    field(w, 5, randomUUID());
    field(w, 6, '12345');
    field(
      w,
      11,
      message(e => (field(e, 1, 'app'), field(e, 2, 'drill'))),
    );
  });
  const secret = message(w => {
    field(w, 1, metadata);
    for (const [key, value] of Object.entries(data))
      field(
        w,
        2,
        message(e => (field(e, 1, key), field(e, 2, value))),
      );
    field(w, 3, 'Opaque');
  });
  const unknown = message(w => {
    field(
      w,
      1,
      message(t => (field(t, 1, 'v1'), field(t, 2, 'Secret'))),
    );
    field(w, 2, secret);
    field(w, 4, 'application/vnd.kubernetes.protobuf');
  });
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), unknown]);
}
