// The transport limit: a gRPC server with the broker's KMS v2 proto on a unix socket that
// answers every call at once with fixed messages of the broker's sizes. Whatever the broker
// adds over this server's latency is the broker's own work.
import { chmodSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { loadService } from '../src/grpc/proto.ts';

const socket = process.argv[2];
if (socket === undefined) throw new Error('usage: bare-server.ts SOCKET');

const status = { version: 'v2', healthz: 'ok', key_id: `kbr1-${'0'.repeat(64)}` };
// An envelope-sized ciphertext (magic, header, IV, 32-byte seed, tag) and a seed.
const encrypted = { ciphertext: Buffer.alloc(90, 1), key_id: status.key_id, annotations: {} };
const decrypted = { plaintext: Buffer.alloc(32, 2) };

const server = new grpc.Server();
server.addService(loadService('kms-v2.proto', 'v2.KeyManagementService'), {
  Status: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, status),
  Encrypt: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, encrypted),
  Decrypt: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, decrypted),
});
server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), error => {
  if (error) throw error;
  chmodSync(socket, 0o600);
  process.stdout.write('serving\n');
});
process.once('SIGTERM', () => server.forceShutdown());
