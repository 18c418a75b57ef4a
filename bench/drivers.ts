// What one benchmark case calls: the broker (or another KMS plugin) over gRPC on its unix
// socket, or a backend directly (SoftHSM through graphene, one Transit HTTP call) for the
// limits the broker's figures are compared with.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { loadService } from '../src/grpc/proto.ts';

export type Operation = 'status' | 'encrypt' | 'decrypt';

export type Target =
  | { readonly kind: 'kms-v2' | 'kms-v1'; readonly socket: string; readonly connections: number }
  | {
      readonly kind: 'pkcs11';
      readonly module: string;
      readonly tokenLabel: string;
      readonly pinFile: string;
      readonly keyLabel: string;
      readonly sessions: number;
    }
  | { readonly kind: 'transit'; readonly address: string; readonly token: string; readonly key: string };

export interface Driver {
  /** Seals `count` distinct seeds for Decrypt calls to walk through (not measured). */
  prepare(count: number): Promise<void>;
  call(operation: Operation, index: number): Promise<unknown>;
  close(): void;
}

const TIMEOUT_MS = 3000;
const SEED_BYTES = 32;

export function openDriver(target: Target): Driver {
  switch (target.kind) {
    case 'kms-v2':
      return kmsV2Driver(target.socket, target.connections);
    case 'kms-v1':
      return kmsV1Driver(target.socket, target.connections);
    case 'pkcs11':
      return pkcs11Driver(target);
    case 'transit':
      return transitDriver(target);
  }
}

type Unary = (method: string, request: object) => Promise<Record<string, unknown>>;

/**
 * `connections` separate channels (as that many apiservers), calls spread over them in turn.
 * Like the apiserver: authority "localhost" and a deadline on every call.
 */
function unaryClients(
  socket: string,
  proto: string,
  service: string,
  connections: number,
): {
  call: (index: number) => Unary;
  close: () => void;
} {
  const Client = grpc.makeGenericClientConstructor(loadService(proto, service), service);
  const clients = Array.from(
    { length: connections },
    // Distinct channel options stop grpc-js from sharing one subchannel between the clients.
    (_, channel) =>
      new Client(`unix://${socket}`, grpc.credentials.createInsecure(), {
        'grpc.default_authority': 'localhost',
        'bench.channel': channel,
      }),
  );
  return {
    call: index => (method, request) =>
      new Promise((resolve, reject) => {
        const client = clients[index % clients.length] as grpc.Client;
        const fn = (client as unknown as Record<string, grpc.requestCallback<unknown>>)[
          method
        ] as unknown as (
          request: object,
          metadata: grpc.Metadata,
          options: grpc.CallOptions,
          callback: grpc.requestCallback<Record<string, unknown>>,
        ) => void;
        fn.call(
          client,
          request,
          new grpc.Metadata(),
          { deadline: Date.now() + TIMEOUT_MS },
          (error, value) => (error ? reject(error) : resolve(value as Record<string, unknown>)),
        );
      }),
    close: () => clients.forEach(client => client.close()),
  };
}

function kmsV2Driver(socket: string, connections: number): Driver {
  const clients = unaryClients(socket, 'kms-v2.proto', 'v2.KeyManagementService', connections);
  let sealed: Record<string, unknown>[] = [];
  return {
    async prepare(count) {
      sealed = await encryptMany(count, () =>
        clients.call(0)('Encrypt', { plaintext: randomBytes(SEED_BYTES), uid: randomUUID() }),
      );
    },
    call(operation, index) {
      const unary = clients.call(index);
      if (operation === 'status') return unary('Status', {});
      if (operation === 'encrypt')
        return unary('Encrypt', { plaintext: randomBytes(SEED_BYTES), uid: randomUUID() });
      const item = sealed[index % sealed.length] as Record<string, unknown>;
      return unary('Decrypt', {
        ciphertext: item['ciphertext'],
        key_id: item['key_id'],
        annotations: item['annotations'],
        uid: randomUUID(),
      });
    },
    close: clients.close,
  };
}

function kmsV1Driver(socket: string, connections: number): Driver {
  const clients = unaryClients(socket, 'kms-v1beta1.proto', 'v1beta1.KeyManagementService', connections);
  let sealed: Record<string, unknown>[] = [];
  return {
    async prepare(count) {
      sealed = await encryptMany(count, () =>
        clients.call(0)('Encrypt', { version: 'v1beta1', plain: randomBytes(SEED_BYTES) }),
      );
    },
    call(operation, index) {
      const unary = clients.call(index);
      if (operation === 'status') return unary('Version', { version: 'v1beta1' });
      if (operation === 'encrypt')
        return unary('Encrypt', { version: 'v1beta1', plain: randomBytes(SEED_BYTES) });
      const item = sealed[index % sealed.length] as Record<string, unknown>;
      return unary('Decrypt', { version: 'v1beta1', cipher: item['cipher'] });
    },
    close: clients.close,
  };
}

/** Seeds ciphertexts for Decrypt cases, 32 at a time (not measured). */
async function encryptMany<T>(count: number, encrypt: () => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  while (results.length < count) {
    const batch = Math.min(32, count - results.length);
    results.push(...(await Promise.all(Array.from({ length: batch }, encrypt))));
  }
  return results;
}

/** C_Encrypt / C_Decrypt with AES-GCM through graphene's async forms, one session per worker. */
function pkcs11Driver(target: Extract<Target, { kind: 'pkcs11' }>): Driver {
  const module = graphene.Module.load(target.module);
  // Without CKF_OS_LOCKING_OK SoftHSM runs without locks while the async calls use threads.
  module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  const slots = module.getSlots(true);
  let slot: graphene.Slot | undefined;
  for (let index = 0; index < slots.length; index++) {
    if (slots.items(index).getToken().label.trim() === target.tokenLabel) slot = slots.items(index);
  }
  if (slot === undefined) throw new Error(`no token labelled ${target.tokenLabel}`);
  const flags = graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION;
  const sessions = Array.from({ length: target.sessions }, () => slot.open(flags));
  const [first] = sessions as [graphene.Session];
  first.login(readFileSync(target.pinFile, 'utf8').trim(), graphene.UserType.USER);
  const found = first.find({ class: graphene.ObjectClass.SECRET_KEY, label: target.keyLabel });
  if (found.length === 0) throw new Error(`no key labelled ${target.keyLabel}`);
  const key = found.items(0).toType<graphene.SecretKey>();
  const aad = Buffer.from('kbr-bench-aad');
  const free = [...sessions];
  const gcm = (iv: Buffer) => ({ name: 'AES_GCM', params: new graphene.AesGcm240Params(iv, aad, 128) });
  const run = async (operate: (session: graphene.Session) => Promise<Buffer>) => {
    const session = free.pop();
    if (session === undefined) throw new Error('more workers than sessions');
    try {
      return await operate(session);
    } finally {
      free.push(session);
    }
  };
  const seal = (session: graphene.Session, iv: Buffer, plaintext: Buffer) =>
    new Promise<Buffer>((resolve, reject) =>
      session
        .createCipher(gcm(iv), key)
        .once(plaintext, Buffer.alloc(plaintext.length + 16), (error, data) =>
          error ? reject(error) : resolve(data),
        ),
    );
  let sealedIv = Buffer.alloc(12);
  let sealedData = Buffer.alloc(0);
  return {
    async prepare() {
      sealedIv = randomBytes(12);
      sealedData = Buffer.from(await run(session => seal(session, sealedIv, randomBytes(SEED_BYTES))));
    },
    call(operation) {
      if (operation === 'encrypt')
        return run(session => seal(session, randomBytes(12), randomBytes(SEED_BYTES)));
      return run(
        session =>
          new Promise<Buffer>((resolve, reject) =>
            session
              .createDecipher(gcm(sealedIv), key)
              .once(sealedData, Buffer.alloc(sealedData.length), (error, data) =>
                error ? reject(error) : resolve(data),
              ),
          ),
      );
    },
    close() {
      for (const session of sessions) session.close();
      module.finalize();
    },
  };
}

/** One Transit HTTP call per operation on keep-alive connections, as the broker sends it. */
function transitDriver(target: Extract<Target, { kind: 'transit' }>): Driver {
  const agent = new http.Agent({ keepAlive: true });
  const aad = Buffer.from('kbr-bench-aad').toString('base64');
  const post = (path: string, body: object) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const payload = JSON.stringify(body);
      const request = http.request(
        `${target.address}/v1/transit/${path}/${target.key}`,
        {
          method: 'POST',
          agent,
          timeout: TIMEOUT_MS,
          headers: { 'X-Vault-Token': target.token, 'Content-Type': 'application/json' },
        },
        response => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () =>
            response.statusCode === 200
              ? resolve(JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>)
              : reject(new Error(`Transit HTTP ${response.statusCode}`)),
          );
        },
      );
      request.on('error', reject);
      request.end(payload);
    });
  const encrypt = () =>
    post('encrypt', {
      plaintext: randomBytes(SEED_BYTES).toString('base64'),
      key_version: 1,
      associated_data: aad,
    });
  let ciphertext = '';
  return {
    async prepare() {
      const response = await encrypt();
      ciphertext = String((response['data'] as Record<string, unknown>)['ciphertext']);
    },
    call(operation) {
      return operation === 'encrypt' ? encrypt() : post('decrypt', { ciphertext, associated_data: aad });
    },
    close: () => agent.destroy(),
  };
}
