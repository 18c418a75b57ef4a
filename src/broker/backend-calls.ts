// One wrap or unwrap by one backend, under the call's deadline, feeding the backend's
// breaker and the metrics with its outcome. The envelope codec binds each wrap to its
// header, and no envelope leaves that the apiserver would refuse.
import type { KekBackend } from '../backends/kek.ts';
import { withSignal, type Deadline } from '../deadline.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import { MAX_CIPHERTEXT_BYTES, MAX_WRAP_BYTES } from '../kms-limits.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { encodeEnvelope, headerAad, type ParsedEnvelope, type WrapBinding } from './envelope.ts';
import type { HealthMonitor } from './health/health-monitor.ts';
import type { WriteKey } from './keys/key-id.ts';

export class BackendCalls {
  readonly #health: HealthMonitor;
  readonly #metrics: Metrics;

  constructor(health: HealthMonitor, metrics: Metrics) {
    this.#health = health;
    this.#metrics = metrics;
  }

  /** Wraps a seed under one write key and returns the encoded envelope, bound to its siblings. */
  async wrap(
    backend: KekBackend,
    key: WriteKey,
    plaintext: Buffer,
    binding: WrapBinding,
    deadline: Deadline,
  ): Promise<Buffer> {
    const aad = headerAad({
      backend: backend.name,
      keyVersion: key.version,
      mechanism: backend.mechanism,
      binding,
    });
    const wrapped = await this.#call(
      backend,
      'wrap',
      backend.wrap({ plaintext, keyVersion: key.version, aad, deadline }),
      deadline,
    );
    const envelope = encodeEnvelope(aad, wrapped);
    // A wrap that may become the ciphertext must fit the apiserver's limit; an escrow wrap
    // only ever travels in an annotation.
    const limit = backend.writeOnly === true ? MAX_WRAP_BYTES : MAX_CIPHERTEXT_BYTES;
    if (envelope.length > limit) {
      throw new BrokerError(
        'INTERNAL',
        `envelope of ${envelope.length} bytes exceeds the ${limit}-byte limit of its place`,
      );
    }
    return envelope;
  }

  unwrap(backend: KekBackend, envelope: ParsedEnvelope, deadline: Deadline): Promise<Buffer> {
    const { keyVersion, mechanism } = envelope.header;
    return this.#call(
      backend,
      'unwrap',
      backend.unwrap({ wrapped: envelope.wrapped, keyVersion, mechanism, aad: envelope.aad, deadline }),
      deadline,
    );
  }

  async #call<T>(backend: KekBackend, operation: string, call: Promise<T>, deadline: Deadline): Promise<T> {
    const started = performance.now();
    try {
      const result = await withSignal(call, deadline.signal);
      this.#health.record(backend.name, true);
      this.#metrics.backendCall(backend.name, operation, 'ok', (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      const brokerError = toBrokerError(error);
      this.#metrics.backendCall(
        backend.name,
        operation,
        brokerError.code,
        (performance.now() - started) / 1000,
      );
      if (brokerError.code === 'BACKEND_UNAVAILABLE' || brokerError.code === 'DEADLINE_EXCEEDED') {
        this.#health.record(backend.name, false, brokerError.causeName ?? brokerError.code);
      }
      throw brokerError;
    }
  }
}
