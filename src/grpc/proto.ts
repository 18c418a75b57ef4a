// Loads the service definitions from proto/ at start. keepCase keeps `key_id` as on the
// wire; bytes arrive as Buffers.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { BrokerError } from '../errors.ts';

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
  return Object.fromEntries(
    Object.entries(service.service).map(([method, definition]) => [
      method,
      { ...definition, requestDeserialize: tolerant(definition.requestDeserialize) },
    ]),
  );
}

/** What a request that is not a valid message of its type decodes to. */
const undecodable = Symbol('undecodable request');

/**
 * grpc-js answers a request its deserializer throws on with INTERNAL; bad input is the
 * caller's error. So the deserializer never throws: it hands the handler a marker, which
 * `decoded` turns into INVALID_ARGUMENT.
 */
function tolerant(deserialize: (bytes: Buffer) => unknown): (bytes: Buffer) => unknown {
  return bytes => {
    try {
      return deserialize(bytes);
    } catch {
      return { [undecodable]: true };
    }
  };
}

/** The request as decoded, or INVALID_REQUEST when its bytes were not a valid message. */
export function decoded<T>(request: T): T {
  if (typeof request === 'object' && request !== null && undecodable in request)
    throw new BrokerError('INVALID_REQUEST', 'the request is not a valid protobuf message of its type');
  return request;
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
