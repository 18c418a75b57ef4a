// KMS v1beta1 (deprecated, still used by clusters migrating from it) on the same socket,
// over the same broker, backends and failover as v2. v1 has no key_id and no annotations,
// so the ciphertext carries every wrap itself (a wrap set); v1 also calls Encrypt on every
// write, which is why its DEK is wrapped, never stored.
import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { KmsService } from '../broker/ports.ts';
import { BrokerError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { deadlineOf, respond, type RequestMetrics } from './kms-v2-service.ts';
import { decoded } from './proto.ts';
import { decodeWrapSet, encodeWrapSet } from './wrap-set.ts';
import { checkPlaintext } from './limits.ts';

const KMS_V1_API_VERSION = 'v1beta1';

interface VersionRequest {
  version: string;
}
interface VersionResponse {
  version: string;
  runtime_name: string;
  runtime_version: string;
}
interface EncryptRequest {
  version: string;
  plain: Buffer;
}
interface DecryptRequest {
  version: string;
  cipher: Buffer;
}

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;

export function kmsV1Handlers(kms: KmsService, metrics: RequestMetrics): grpc.UntypedServiceImplementation {
  const Version: Unary<VersionRequest, VersionResponse> = (call, callback) => {
    respond(metrics, 'v1beta1.Version', callback, () => {
      checkVersion(decoded(call.request).version);
      return Promise.resolve({
        version: KMS_V1_API_VERSION,
        runtime_name: 'kms-broker',
        runtime_version: VERSION,
      });
    });
  };

  const Encrypt: Unary<EncryptRequest, { cipher: Buffer }> = (call, callback) => {
    respond(metrics, 'v1beta1.Encrypt', callback, async () => {
      const { version, plain } = decoded(call.request);
      checkVersion(version);
      checkPlaintext(plain);
      // v1 requests carry no uid; one of ours still ties the log lines of a call together.
      const result = await kms.encrypt(plain, {
        uid: `v1-${randomUUID()}`,
        deadline: deadlineOf(call),
      });
      return { cipher: encodeWrapSet([result.ciphertext, ...Object.values(result.annotations)]) };
    });
  };

  const Decrypt: Unary<DecryptRequest, { plain: Buffer }> = (call, callback) => {
    respond(metrics, 'v1beta1.Decrypt', callback, async () => {
      const { version, cipher } = decoded(call.request);
      checkVersion(version);
      // v1 has no key_id: Decrypt routes by the envelopes alone.
      const plain = await kms.decryptWraps(decodeWrapSet(cipher), {
        uid: `v1-${randomUUID()}`,
        deadline: deadlineOf(call),
      });
      return { plain };
    });
  };

  return { Version, Encrypt, Decrypt };
}

/** The apiserver always sends "v1beta1"; an empty version is tolerated, anything else is not. */
function checkVersion(version: string): void {
  if (version !== '' && version !== KMS_V1_API_VERSION) {
    throw new BrokerError(
      'INVALID_REQUEST',
      `unsupported KMS API version '${version}'; this service speaks ${KMS_V1_API_VERSION}`,
    );
  }
}
