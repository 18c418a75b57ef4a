// KMS v2 handlers: decode, check limits, call the broker, map errors to precise gRPC
// codes. Details are the catalog's messages, never a backend's raw error text.
import type * as grpc from '@grpc/grpc-js';
import { isOwnKeyId } from '../broker/key-id.ts';
import type { Broker } from '../broker/broker.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { Metrics } from '../metrics.ts';
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
    const started = performance.now();
    const status = broker.status();
    callback(null, { version: status.version, healthz: status.healthz, key_id: status.keyId });
    broker.metrics.kmsRequest('v2.Status', 'ok', (performance.now() - started) / 1000);
  };

  const Encrypt: Unary<EncryptRequest, EncryptResponse> = (call, callback) => {
    respond(broker.metrics, 'v2.Encrypt', callback, async () => {
      const { plaintext, uid } = call.request;
      checkPlaintext(plaintext);
      checkUid(uid);
      const result = await broker.encrypt(plaintext, { uid, deadline: deadlineOf(call) });
      checkEncryptResponse(result);
      return { ciphertext: result.ciphertext, key_id: result.keyId, annotations: { ...result.annotations } };
    });
  };

  const Decrypt: Unary<DecryptRequest, DecryptResponse> = (call, callback) => {
    respond(broker.metrics, 'v2.Decrypt', callback, async () => {
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

/** Sends the handler's result or its error as a precise gRPC status, and counts the call. */
export function respond<Res>(
  metrics: Metrics,
  method: string,
  callback: grpc.sendUnaryData<Res>,
  handler: () => Promise<Res>,
): void {
  const started = performance.now();
  handler().then(
    response => {
      callback(null, response);
      metrics.kmsRequest(method, 'ok', (performance.now() - started) / 1000);
    },
    (error: unknown) => {
      const brokerError = toBrokerError(error);
      callback({ code: brokerError.grpcCode, details: `${brokerError.code}: ${brokerError.message}` });
      metrics.kmsRequest(method, brokerError.code, (performance.now() - started) / 1000);
    },
  );
}

/** The caller's deadline in epoch ms, or undefined when it sent none. */
export function deadlineOf(call: grpc.ServerUnaryCall<unknown, unknown>): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}
