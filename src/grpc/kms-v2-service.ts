// KMS v2 handlers: decode, check limits, call the broker, map errors to precise gRPC
// codes. Details are the catalog's messages, never a backend's raw error text.
import type * as grpc from '@grpc/grpc-js';
import type { KmsService } from '../broker/ports.ts';
import { decoded } from './proto.ts';
import { toBrokerError } from '../errors.ts';
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

/** Where the handlers count each request (method, outcome, seconds). */
export interface RequestMetrics {
  kmsRequest(method: string, outcome: string, seconds: number): void;
}

export function kmsV2Handlers(kms: KmsService, metrics: RequestMetrics): grpc.UntypedServiceImplementation {
  const Status: Unary<unknown, StatusResponse> = (_call, callback) => {
    const started = performance.now();
    const status = kms.status();
    callback(null, { version: status.version, healthz: status.healthz, key_id: status.keyId });
    metrics.kmsRequest('v2.Status', 'ok', (performance.now() - started) / 1000);
  };

  const Encrypt: Unary<EncryptRequest, EncryptResponse> = (call, callback) => {
    respond(metrics, 'v2.Encrypt', callback, async () => {
      const { plaintext, uid } = decoded(call.request);
      checkPlaintext(plaintext);
      checkUid(uid);
      const result = await kms.encrypt(plaintext, { uid, deadline: deadlineOf(call) });
      checkEncryptResponse(result);
      return { ciphertext: result.ciphertext, key_id: result.keyId, annotations: { ...result.annotations } };
    });
  };

  const Decrypt: Unary<DecryptRequest, DecryptResponse> = (call, callback) => {
    respond(metrics, 'v2.Decrypt', callback, async () => {
      const { ciphertext, uid, key_id: keyId, annotations } = decoded(call.request);
      checkCiphertext(ciphertext);
      checkUid(uid);
      checkKeyId(keyId);
      checkAnnotations(annotations);
      const plaintext = await kms.decrypt(
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
  metrics: RequestMetrics,
  method: string,
  callback: grpc.sendUnaryData<Res>,
  handler: () => Promise<Res>,
): void {
  const started = performance.now();
  // A check that throws before the handler's first await is answered like any other refusal.
  Promise.resolve()
    .then(handler)
    .then(
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
