// The layout of a crypto lane's shared memory, and the encoding of a cipher call and its
// result into it. A lane is one SharedArrayBuffer between the event loop and one crypto
// thread: a state word that both sides wait on (Atomics), then the call or its result. The
// call is copied in and the result out, so no structured clone or message port is involved.
import { BrokerError } from '../../../errors.ts';
import type { CipherCall, CipherParams, CipherResult } from './cipher-call.ts';

/** The state word: who holds the lane now. */
export const LaneState = { idle: 0, request: 1, done: 2, stop: 3 } as const;
export const STATE_INDEX = 0;
const CONTROL_BYTES = 16;
/** Room for a call: the largest wrap (4 KiB), an envelope header, and slack; far above real calls. */
const DATA_BYTES = 32 * 1024;

export interface LaneMemory {
  readonly control: Int32Array;
  readonly data: Buffer;
}

export function allocateLane(): SharedArrayBuffer {
  return new SharedArrayBuffer(CONTROL_BYTES + DATA_BYTES);
}

export function laneMemory(shared: SharedArrayBuffer): LaneMemory {
  return { control: new Int32Array(shared, 0, CONTROL_BYTES / 4), data: Buffer.from(shared, CONTROL_BYTES) };
}

class Writer {
  readonly data: Buffer;
  #at = 0;

  constructor(data: Buffer) {
    this.data = data;
  }

  u32(value: number): void {
    this.#room(4);
    this.#at = this.data.writeUInt32LE(value, this.#at);
  }

  bytes(value: Buffer): void {
    this.u32(value.length);
    this.#room(value.length);
    this.#at += value.copy(this.data, this.#at);
  }

  #room(bytes: number): void {
    if (this.#at + bytes > this.data.length)
      throw new BrokerError('INVALID_REQUEST', `an HSM call carries more than ${DATA_BYTES} bytes`);
  }
}

class Reader {
  readonly data: Buffer;
  #at = 0;

  constructor(data: Buffer) {
    this.data = data;
  }

  u32(): number {
    const value = this.data.readUInt32LE(this.#at);
    this.#at += 4;
    return value;
  }

  /** A copy in memory of its own: the token may write into it (a GCM IV field). */
  bytes(): Buffer {
    const length = this.u32();
    const copy = Buffer.alloc(length);
    this.data.copy(copy, 0, this.#at, this.#at + length);
    this.#at += length;
    return copy;
  }
}

const PARAMS_NONE = 0;
const PARAMS_GCM = 1;
const PARAMS_OAEP = 2;

export function writeCall(data: Buffer, call: CipherCall): void {
  const writer = new Writer(data);
  writer.u32(call.direction === 'encrypt' ? 1 : 0);
  writer.bytes(call.session);
  writer.bytes(call.key);
  writer.u32(call.mechanism);
  writer.u32(call.outputBytes);
  writer.bytes(call.input);
  const { params } = call;
  if (params === undefined) writer.u32(PARAMS_NONE);
  else if (params.kind === 'gcm') {
    writer.u32(PARAMS_GCM);
    writer.bytes(params.iv);
    writer.u32(params.ivBits);
    writer.bytes(params.aad);
    writer.u32(params.tagBits);
  } else {
    writer.u32(PARAMS_OAEP);
    writer.u32(params.hashAlg);
    writer.u32(params.mgf);
  }
  // The output and the IV field come back in the same memory.
  if (call.outputBytes + (params?.kind === 'gcm' ? params.iv.length : 0) + 16 > DATA_BYTES)
    throw new BrokerError('INVALID_REQUEST', `an HSM call's output exceeds ${DATA_BYTES} bytes`);
}

export function readCall(data: Buffer): CipherCall {
  const reader = new Reader(data);
  const direction = reader.u32() === 1 ? 'encrypt' : 'decrypt';
  const session = reader.bytes();
  const key = reader.bytes();
  const mechanism = reader.u32();
  const outputBytes = reader.u32();
  const input = reader.bytes();
  const kind = reader.u32();
  let params: CipherParams | undefined;
  if (kind === PARAMS_GCM) {
    params = {
      kind: 'gcm',
      iv: reader.bytes(),
      ivBits: reader.u32(),
      aad: reader.bytes(),
      tagBits: reader.u32(),
    };
  } else if (kind === PARAMS_OAEP) {
    params = { kind: 'oaep', hashAlg: reader.u32(), mgf: reader.u32() };
  }
  return { direction, session, key, mechanism, outputBytes, input, params };
}

const RESULT_OK = 0;
const RESULT_FAILED = 1;

export function writeResult(data: Buffer, result: CipherResult): void {
  const writer = new Writer(data);
  writer.u32(RESULT_OK);
  writer.bytes(result.output);
  writer.bytes(result.ivField ?? Buffer.alloc(0));
}

/** The failure's first line only: pkcs11js puts the CKR_ name there, and nothing secret. */
export function writeFailure(data: Buffer, error: unknown): void {
  const writer = new Writer(data);
  writer.u32(RESULT_FAILED);
  const message = error instanceof Error ? error.message : String(error);
  writer.bytes(Buffer.from((message.split('\n')[0] ?? '').slice(0, 512)));
}

/** The result; a failure is thrown as the Error the token's call threw, by its message. */
export function readResult(data: Buffer, call: CipherCall): CipherResult {
  const reader = new Reader(data);
  const status = reader.u32();
  if (status !== RESULT_OK) throw new Error(reader.bytes().toString());
  const output = reader.bytes();
  const ivField = reader.bytes();
  return { output, ivField: call.params?.kind === 'gcm' ? ivField : undefined };
}
