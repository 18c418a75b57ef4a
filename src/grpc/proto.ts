// Loads the service definitions from proto/ at start. keepCase keeps `key_id` as on the
// wire; bytes arrive as Buffers.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const loaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function loadService(file: string, serviceName: string): grpc.ServiceDefinition {
  const path = fileURLToPath(new URL(`../../proto/${file}`, import.meta.url));
  const definition = grpc.loadPackageDefinition(protoLoader.loadSync(path, loaderOptions));
  const [pkg, name] = serviceName.split('.') as [string, string];
  const service = (definition[pkg] as grpc.GrpcObject)[name] as grpc.ServiceClientConstructor;
  return service.service;
}

/** KMS v2 wire messages (proto/kms-v2.proto) as proto-loader delivers them. */
export interface StatusResponse {
  version: string;
  healthz: string;
  key_id: string;
}
export interface EncryptRequest {
  plaintext: Buffer;
  uid: string;
}
export interface EncryptResponse {
  ciphertext: Buffer;
  key_id: string;
  annotations: Record<string, Buffer>;
}
export interface DecryptRequest {
  ciphertext: Buffer;
  uid: string;
  key_id: string;
  annotations: Record<string, Buffer>;
}
export interface DecryptResponse {
  plaintext: Buffer;
}
