// A small KMS v2 client over the unix socket, for `kms-broker verify`, tests and bench.
import { resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  loadService,
  type DecryptRequest,
  type DecryptResponse,
  type EncryptResponse,
  type StatusResponse,
} from './proto.ts';

export interface KmsV2Client {
  status(): Promise<StatusResponse>;
  encrypt(plaintext: Buffer, uid?: string): Promise<EncryptResponse>;
  decrypt(
    request: Partial<DecryptRequest> & { ciphertext: Buffer; key_id: string },
  ): Promise<DecryptResponse>;
  close(): void;
}

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;
type UnaryMethod = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: Callback<unknown>,
) => void;

export function createKmsV2Client(socketPath: string, timeoutMs = 3000): KmsV2Client {
  const Client = grpc.makeGenericClientConstructor(
    loadService('kms-v2.proto', 'v2.KeyManagementService'),
    'KeyManagementService',
  );
  // Like the apiserver since 1.32: authority "localhost" on a unix socket. The path made
  // absolute: in unix://run/kms.sock gRPC reads "run" as the authority, not a folder.
  const client = new Client(`unix://${resolve(socketPath)}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': 'localhost',
  });
  const call = <T>(method: string, request: unknown): Promise<T> =>
    new Promise((resolve, reject) => {
      const fn = (client as unknown as Record<string, UnaryMethod>)[method] as UnaryMethod;
      fn.call(
        client,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (error, response) => (error ? reject(error) : resolve(response as T)),
      );
    });
  return {
    status: () => call<StatusResponse>('Status', {}),
    encrypt: (plaintext, uid = crypto.randomUUID()) => call<EncryptResponse>('Encrypt', { plaintext, uid }),
    decrypt: request =>
      call<DecryptResponse>('Decrypt', { uid: crypto.randomUUID(), annotations: {}, ...request }),
    close: () => client.close(),
  };
}
