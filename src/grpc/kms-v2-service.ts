// KMS v2 handlers: decode, check limits, call the broker, map errors to precise gRPC
// codes. Details are the catalog's messages, never a backend's raw error text.
import type * as grpc from '@grpc/grpc-js';
import { isOwnKeyId } from '../broker/key-id.ts';
import type { Broker } from '../broker/broker.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import {
  checkAnnotations,
  checkCiphertext,
  checkEncryptResponse,
  checkKeyId,
  checkPlaintext,
  checkUid,
} from './limits.ts';
import type {
  DecryptRequest,
  DecryptResponse,
  EncryptRequest,
  EncryptResponse,
  StatusResponse,
} from './proto.ts';

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;

export function kmsV2Handlers(broker: Broker): grpc.UntypedServiceImplementation {
  const Status: Unary<unknown, StatusResponse> = (_call, callback) => {
    const status = broker.status();
    callback(null, { version: status.version, healthz: status.healthz, key_id: status.keyId });
  };

  const Encrypt: Unary<EncryptRequest, EncryptResponse> = (call, callback) => {
    respond(callback, async () => {
      const { plaintext, uid } = call.request;
      checkPlaintext(plaintext);
      checkUid(uid);
      const result = await broker.encrypt(plaintext, { uid, deadline: deadlineOf(call) });
      checkEncryptResponse(result);
      return { ciphertext: result.ciphertext, key_id: result.keyId, annotations: { ...result.annotations } };
    });
  };

  const Decrypt: Unary<DecryptRequest, DecryptResponse> = (call, callback) => {
    respond(callback, async () => {
      const { ciphertext, uid, key_id: keyId, annotations } = call.request;
      checkCiphertext(ciphertext);
      checkUid(uid);
      checkKeyId(keyId);
      checkAnnotations(annotations);
      // The docs require plugins not to touch data another plugin encrypted.
      if (!isOwnKeyId(keyId))
        throw new BrokerError('INVALID_CIPHERTEXT', 'key_id was not issued by kms-broker');
      const plaintext = await broker.decrypt(
        { ciphertext, keyId, annotations },
        { uid, deadline: deadlineOf(call) },
      );
      return { plaintext };
    });
  };

  return { Status, Encrypt, Decrypt };
}

export function respond<Res>(callback: grpc.sendUnaryData<Res>, handler: () => Promise<Res>): void {
  handler().then(
    response => callback(null, response),
    (error: unknown) => {
      const brokerError = toBrokerError(error);
      callback({ code: brokerError.grpcCode, details: `${brokerError.code}: ${brokerError.message}` });
    },
  );
}

/** The caller's deadline in epoch ms, or undefined when it sent none. */
export function deadlineOf(call: grpc.ServerUnaryCall<unknown, unknown>): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}
