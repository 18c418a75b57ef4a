// Reconciles the stored state with what the backends hold: versions created elsewhere are
// adopted, a key that changed identity or a write version that vanished is refused rather
// than guessed at, and a run-time failover change gives way once the config file was edited.
import { isDeepStrictEqual } from 'node:util';
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import { within } from '../../deadline.ts';
import { BrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { emptyState, type BrokerState, type FailoverSetting, type StoredVersion } from './state-schema.ts';

type StoredBackend = BrokerState['backends'][string];

/** Budget for key administration (listing, creating versions), which the apiserver does not wait on. */
export const ADMIN_CALL_MS = 30000;

/**
 * The failover setting in force: a run-time change recorded in the state still applies
 * while the config's setting is the one it replaced; once the config file was edited, the
 * file wins again (and the stale run-time change is dropped).
 */
export function resolveFailover(
  state: BrokerState,
  config: BrokerConfig,
  logger: Logger,
): { setting: FailoverSetting; dropped: boolean } {
  const fromConfig: FailoverSetting = { order: [...config.failover.order], wrap: config.failover.wrap };
  const recorded = state.failover;
  if (recorded === undefined) return { setting: fromConfig, dropped: false };
  const usable = recorded.current.order.every(name => config.backends.some(backend => backend.name === name));
  if (usable && isDeepStrictEqual(recorded.basedOn, fromConfig))
    return { setting: recorded.current, dropped: false };
  logger.warn(
    { runtime: recorded.current, config: fromConfig },
    'the config file changed the failover setting since the last run-time change; using the config',
  );
  delete state.failover;
  return { setting: fromConfig, dropped: true };
}

export interface Listing {
  readonly backend: KekBackend;
  readonly listed: readonly KeyVersionInfo[];
}

/**
 * The stored state reconciled with fresh listings of some backends. Backends without a
 * listing (unreachable now) keep what the state says of them.
 */
export async function reconcileListings(
  stored: BrokerState | undefined,
  listings: ReadonlyMap<string, Listing>,
  now: Date,
  options: { create: boolean; logger: Logger },
): Promise<{ state: BrokerState; changed: boolean }> {
  const state = stored === undefined ? emptyState() : structuredClone(stored);
  let changed = false;
  for (const [name, { backend, listed }] of listings) {
    const merged = await reconcileListing(name, backend, state.backends[name], listed, now, options);
    state.backends[name] = merged.backend;
    changed ||= merged.changed;
  }
  return { state, changed };
}

/**
 * One backend's stored entry reconciled with its listing; version 1 is created where the
 * backend holds none, nothing is stored and `create` allows it.
 */
export async function reconcileListing(
  name: string,
  backend: KekBackend,
  stored: StoredBackend | undefined,
  listed: readonly KeyVersionInfo[],
  now: Date,
  options: { create: boolean; logger: Logger },
): Promise<{ backend: StoredBackend; changed: boolean }> {
  const merged = reconcileBackend(name, stored, listed, now, { replaceable: backend.writeOnly === true });
  if (merged !== undefined) {
    if (merged.missing.length > 0 && backend.writeOnly === true) {
      options.logger.info(
        { backend: name, versions: merged.missing, writeVersion: merged.backend.writeVersion },
        'the escrow key was replaced; wraps made with the old one open offline with its own shares',
      );
    } else if (merged.missing.length > 0) {
      options.logger.warn(
        { backend: name, versions: merged.missing },
        'key versions in the state are missing from the backend; their data is unreadable until they are restored',
      );
    }
    return refitWriteVersion(name, backend, merged, listed, now, options);
  }
  if (!options.create || !backend.autoCreate) {
    throw new BrokerError(
      'KEY_MISSING',
      `backend ${name} holds no key version; set ${backend.autoCreateOption}: true on it to create version 1, or create the key in the ${backend.type} service`,
    );
  }
  const created = await within(ADMIN_CALL_MS, deadline => backend.createVersion(deadline));
  return { backend: { writeVersion: created.version, versions: [toStored(created, now)] }, changed: true };
}

/**
 * A write version whose key was made for another mechanism than the config now names (the
 * operator switched mechanism) gives way: to the newest listed version after it that fits
 * (an HSM administrator created it), else to one created now where `create` allows it. The
 * old version keeps unwrapping what it wrapped. Otherwise start-up stops with the fix.
 */
async function refitWriteVersion(
  name: string,
  backend: KekBackend,
  merged: { backend: StoredBackend; changed: boolean },
  listed: readonly KeyVersionInfo[],
  now: Date,
  options: { create: boolean; logger: Logger },
): Promise<{ backend: StoredBackend; changed: boolean }> {
  const { writeVersion, versions } = merged.backend;
  const at = listed.findIndex(info => info.version === writeVersion);
  const refusal = listed[at]?.writeRefusal;
  if (refusal === undefined) return merged;
  let next = listed.slice(at + 1).findLast(info => info.writeRefusal === undefined);
  const known = new Set(versions.map(version => version.version));
  let added: StoredVersion[] = [];
  if (next === undefined) {
    if (!options.create || !backend.autoCreate) {
      throw new BrokerError(
        'KEY_MECHANISM_MISMATCH',
        `backend ${name}: write key version ${writeVersion} ${refusal}; set ${backend.autoCreateOption}: true to create the next version for it at start, or create that version in the ${backend.type} service`,
      );
    }
    next = await within(ADMIN_CALL_MS, deadline => backend.createVersion(deadline));
    added = [toStored(next, now)];
  } else if (!known.has(next.version)) {
    added = [toStored(next, now)];
  }
  options.logger.warn(
    { backend: name, from: writeVersion, to: next.version, mechanism: backend.mechanism },
    'the write key version was made for another mechanism; the new one writes, the old one still unwraps',
  );
  const ended = versions.map(version =>
    version.version === writeVersion
      ? { ...version, writeEndedAt: version.writeEndedAt ?? now.toISOString() }
      : version,
  );
  return { backend: { writeVersion: next.version, versions: [...ended, ...added] }, changed: true };
}

/**
 * Merges what the state file says about one backend with what the backend holds.
 * Versions the backend has but the state lacks are adopted as active (created by another
 * broker or an operator). A write version the backend lacks, or a key whose identity
 * changed, is refused rather than guessed at. An older version the backend lacks is kept
 * (its data reads again once the key is restored) and reported in `missing`.
 * Returns undefined when neither side knows any version.
 *
 * `replaceable`: the backend's key is replaced, not rotated, by its operator (an escrow key,
 * whose config names one public key file): a write version it no longer lists gives way to
 * the one it lists, and the old one stays recorded, as data still carries its wraps.
 */
export function reconcileBackend(
  name: string,
  stored: StoredBackend | undefined,
  listed: readonly KeyVersionInfo[],
  now: Date,
  options: { readonly replaceable: boolean } = { replaceable: false },
): { backend: StoredBackend; changed: boolean; missing: string[] } | undefined {
  const byVersion = new Map(listed.map(info => [info.version, info]));
  if (stored === undefined) {
    if (listed.length === 0) return undefined;
    const versions = listed.map(info => toStored(info, now));
    const latest = versions[versions.length - 1] as StoredVersion;
    return { backend: { writeVersion: latest.version, versions }, changed: true, missing: [] };
  }
  for (const version of stored.versions) {
    const found = byVersion.get(version.version);
    if (found === undefined && version.version === stored.writeVersion && !options.replaceable) {
      throw new BrokerError(
        'STATE_MISMATCH',
        `backend ${name}: the state says version ${version.version} writes, but the backend holds no such key; check that the backend points at the right token or key`,
      );
    }
    if (found !== undefined && found.fingerprint !== version.fingerprint) {
      throw new BrokerError(
        'STATE_MISMATCH',
        `backend ${name}: key version ${version.version} has a different identity than the state records; it was recreated or the backend points elsewhere`,
      );
    }
  }
  const missing = stored.versions
    .filter(version => !byVersion.has(version.version))
    .map(version => version.version);
  const known = new Set(stored.versions.map(version => version.version));
  const adopted = listed.filter(info => !known.has(info.version)).map(info => toStored(info, now));
  const replaced = options.replaceable && missing.includes(stored.writeVersion);
  const writeVersion = replaced
    ? (listed[listed.length - 1]?.version ?? stored.writeVersion)
    : stored.writeVersion;
  if (adopted.length === 0 && !replaced) return { backend: stored, changed: false, missing };
  const versions = [...stored.versions, ...adopted].map(version =>
    replaced && version.version === stored.writeVersion
      ? { ...version, writeEndedAt: version.writeEndedAt ?? now.toISOString() }
      : version,
  );
  return { backend: { writeVersion, versions }, changed: true, missing };
}

export function toStored(info: KeyVersionInfo, now: Date): StoredVersion {
  return {
    version: info.version,
    fingerprint: info.fingerprint,
    createdAt: info.createdAt ?? now.toISOString(),
    state: 'active',
  };
}
