// Status, Encrypt and Decrypt over the KEK interface: the broker's hot path. It reads the key
// set in one snapshot, never waits on admin work or disk I/O, and keeps every backend call
// inside the call's deadline.
import type { KekBackend } from '../backends/kek.ts';
import { partOfDeadline, remainingMs, startDeadline, type Deadline } from '../deadline.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { ESCROW_MECHANISM } from '../escrow/hybrid-wrap.ts';
import type { BackendCalls } from './backend-calls.ts';
import {
  annotationWraps,
  bindingFor,
  checkWrapsBelongTogether,
  commitsTo,
  decodeEnvelope,
  WRAP_ANNOTATION_SUFFIX,
  type ParsedEnvelope,
} from './envelope.ts';
import type { HealthMonitor } from './health/health-monitor.ts';
import { isOwnKeyId, type WriteKey } from './keys/key-id.ts';
import type { KeySet } from './keys/key-set.ts';
import type { UsageLog } from './keys/usage.ts';
import type { VersionLookup } from './keys/version-lookup.ts';
import type { CallContext, DecryptInput, EncryptResult, KmsService, StatusResult } from './ports.ts';
import type { ThinSeeds } from './thin-seeds.ts';

const KMS_API_VERSION = 'v2';

export interface KmsServiceDeps {
  readonly callMs: number;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly keys: KeySet;
  readonly usage: UsageLog;
  readonly lookup: VersionLookup;
  readonly health: HealthMonitor;
  readonly calls: BackendCalls;
  readonly thinSeeds: ThinSeeds;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

export function createKmsService(deps: KmsServiceDeps): KmsService {
  const { keys, health, calls, logger } = deps;

  const status = (): StatusResult => {
    const { keyId, writeKeys, wrap } = keys.current;
    return {
      version: KMS_API_VERSION,
      healthz: health.healthz(
        writeKeys.map(key => key.backend),
        wrap,
      ),
      keyId,
    };
  };

  const encrypt = async (plaintext: Buffer, context: CallContext): Promise<EncryptResult> => {
    const started = performance.now();
    // One read: the key_id returned is the one of the versions that wrap, even if a
    // rotation lands while the wraps are in flight.
    const { keyId, writeKeys, escrowKeys } = keys.current;
    const deadline = startDeadline(deps.callMs, context.deadline);
    try {
      // Backends whose breaker is open are left out at once (a thin envelope now beats a
      // full one after the deadline); only when every writer is open are they all tried.
      const available = writeKeys.filter(key => health.health(key.backend)?.breaker !== 'open');
      const targets = available.length > 0 ? available : writeKeys;
      const binding = bindingFor(plaintext);
      const wrapAll = (keysToWrap: readonly WriteKey[]) =>
        Promise.allSettled(
          keysToWrap.map(key => calls.wrap(backendOf(key.backend), key, plaintext, binding, deadline)),
        );
      const [results, escrowResults] = await Promise.all([wrapAll(targets), wrapAll(escrowKeys)]);
      const wrapped = succeeded(targets, results);
      const [first, ...others] = wrapped;
      if (first === undefined) throw firstError(results);
      // An escrow wrap never makes an Encrypt succeed; it only travels beside one that did.
      const escrowed = succeeded(escrowKeys, escrowResults);
      const missing = [...writeKeys, ...escrowKeys]
        .filter(key => !wrapped.some(w => w.key === key) && !escrowed.some(w => w.key === key))
        .map(key => key.backend);
      if (missing.length > 0) {
        deps.metrics.underReplicated();
        deps.thinSeeds.add(keyId, missing);
        logger.warn({ uid: context.uid, missing }, 'envelope is under-replicated');
      }
      const annotations = Object.fromEntries(
        [...others, ...escrowed].map(({ key, envelope }) => [
          `${key.backend}${WRAP_ANNOTATION_SUFFIX}`,
          envelope,
        ]),
      );
      logCall('encrypt', context, started, () => ({
        backend: [...wrapped, ...escrowed].map(w => w.key.backend).join(','),
        keyVersion: first.key.version,
      }));
      return { ciphertext: first.envelope, keyId, annotations };
    } catch (error) {
      throw logFailure('encrypt', context, started, error);
    } finally {
      deadline.dispose();
    }
  };

  /**
   * Tries every wrap the envelope carries, healthy backends first in failover order, inside
   * one deadline; the first success wins.
   */
  const decryptEnvelopes = async (decode: () => ParsedEnvelope[], context: CallContext): Promise<Buffer> => {
    const started = performance.now();
    const deadline = startDeadline(deps.callMs, context.deadline);
    try {
      const envelopes = decode();
      checkWrapsBelongTogether(envelopes);
      // Escrow wraps open only offline, with the shares: never tried here.
      const candidates = rank(envelopes.filter(envelope => envelope.header.mechanism !== ESCROW_MECHANISM));
      if (candidates.length === 0)
        throw new BrokerError(
          'INVALID_CIPHERTEXT',
          'the ciphertext carries only escrow wraps, which open offline with `kms-broker recover`',
        );
      const failures: BrokerError[] = [];
      for (const [index, candidate] of candidates.entries()) {
        if (deadline.signal.aborted) break;
        // A backend that hangs must not spend the whole budget while another wrap could
        // answer: each try gets an equal share of what is left among the untried wraps.
        const untried = candidates.length - index;
        const part = untried > 1 ? partOfDeadline(deadline, remainingMs(deadline) / untried) : undefined;
        try {
          const plaintext = await unwrap(candidate, part ?? deadline);
          if (!commitsTo(candidate.header, plaintext)) {
            throw new BrokerError(
              'INVALID_CIPHERTEXT',
              `backend '${candidate.header.backend}' returned a seed its envelope does not commit to`,
            );
          }
          deps.usage.record(candidate.header.backend, candidate.header.keyVersion);
          logCall('decrypt', context, started, () => ({
            backend: candidate.header.backend,
            keyVersion: candidate.header.keyVersion,
          }));
          return plaintext;
        } catch (error) {
          failures.push(toBrokerError(error));
        } finally {
          part?.dispose();
        }
      }
      throw (
        mostUseful(failures) ??
        new BrokerError('DEADLINE_EXCEEDED', 'the call did not complete within its deadline')
      );
    } catch (error) {
      throw logFailure('decrypt', context, started, error);
    } finally {
      deadline.dispose();
    }
  };

  const unwrap = async (envelope: ParsedEnvelope, deadline: Deadline): Promise<Buffer> => {
    const { backend: name, keyVersion } = envelope.header;
    const backend = deps.backends.get(name);
    if (backend === undefined) {
      throw new BrokerError(
        'UNKNOWN_BACKEND',
        `the ciphertext was wrapped by backend '${name}', which is not configured`,
      );
    }
    const known = keys.version(name, keyVersion);
    if (known?.state === 'retired') {
      throw new BrokerError(
        'KEY_VERSION_RETIRED',
        `key version '${keyVersion}' of backend '${name}' is retired; restore it to read this data`,
      );
    }
    if (known === undefined && (await deps.lookup.find(name, keyVersion, deadline)) === undefined)
      throw new BrokerError('UNKNOWN_KEY_VERSION', `backend '${name}' holds no key version '${keyVersion}'`);
    return calls.unwrap(backend, envelope, deadline);
  };

  /** The wraps, healthy backends first, each group in failover order. */
  const rank = (envelopes: ParsedEnvelope[]): ParsedEnvelope[] => {
    const { order } = keys.failover;
    const score = (envelope: ParsedEnvelope) => {
      const position = order.indexOf(envelope.header.backend);
      const healthy = health.health(envelope.header.backend)?.healthy === true;
      return (healthy ? 0 : 1000) + (position < 0 ? 100 : position);
    };
    return envelopes
      .map((envelope, index) => ({ envelope, index }))
      .sort((a, b) => score(a.envelope) - score(b.envelope) || a.index - b.index)
      .map(({ envelope }) => envelope);
  };

  const backendOf = (name: string): KekBackend => {
    const backend = deps.backends.get(name);
    if (backend === undefined)
      throw new BrokerError('UNKNOWN_BACKEND', `backend '${name}' is not configured`);
    return backend;
  };

  // A successful call is logged at debug: one line per call cost 5-8 % of the broker's CPU
  // under load (docs/performance.md); failures stay at warn, and the metrics count every
  // call. The fields are built only when the line is written.
  const logCall = (
    op: string,
    context: CallContext,
    started: number,
    fields: () => Record<string, string>,
  ) => {
    if (!logger.isLevelEnabled('debug')) return;
    logger.debug(
      { op, uid: context.uid, ms: round(performance.now() - started), outcome: 'ok', ...fields() },
      'kms call',
    );
  };

  const logFailure = (op: string, context: CallContext, started: number, error: unknown): BrokerError => {
    const brokerError = toBrokerError(error);
    logger.warn(
      {
        op,
        uid: context.uid,
        ms: round(performance.now() - started),
        outcome: brokerError.code,
        cause: brokerError.causeName,
        err: brokerError.message,
      },
      'kms call failed',
    );
    return brokerError;
  };

  return {
    status,
    encrypt,
    decrypt: (input: DecryptInput, context: CallContext) =>
      decryptEnvelopes(() => {
        // The docs require plugins not to touch data another plugin encrypted.
        if (!isOwnKeyId(input.keyId))
          throw new BrokerError('INVALID_CIPHERTEXT', 'key_id was not issued by kms-broker');
        return [decodeEnvelope(input.ciphertext), ...annotationWraps(input.annotations)];
      }, context),
    decryptWraps: (wraps: readonly Buffer[], context: CallContext) =>
      decryptEnvelopes(() => {
        if (wraps.length === 0) throw new BrokerError('INVALID_CIPHERTEXT', 'ciphertext carries no wraps');
        return wraps.map(wrap => decodeEnvelope(wrap));
      }, context),
  };
}

/** The wraps that succeeded, each with its key. */
function succeeded(
  keys: readonly WriteKey[],
  results: readonly PromiseSettledResult<Buffer>[],
): { key: WriteKey; envelope: Buffer }[] {
  return results.flatMap((result, index) =>
    result.status === 'fulfilled' ? [{ key: keys[index] as WriteKey, envelope: result.value }] : [],
  );
}

function firstError(results: readonly PromiseSettledResult<unknown>[]): BrokerError {
  const failures = results.flatMap(result =>
    result.status === 'rejected' ? [toBrokerError(result.reason)] : [],
  );
  return mostUseful(failures) ?? new BrokerError('INTERNAL', 'no backend wrapped the seed');
}

/**
 * When every wrap failed: a transient failure (which the apiserver retries) says more than
 * a permanent one of a backend that happens to be down; otherwise the first failure.
 */
function mostUseful(failures: readonly BrokerError[]): BrokerError | undefined {
  return (
    failures.find(error => error.code === 'BACKEND_UNAVAILABLE' || error.code === 'DEADLINE_EXCEEDED') ??
    failures[0]
  );
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
