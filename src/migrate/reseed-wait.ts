// Before anything is rewritten, every apiserver must write under the broker's current key_id:
// a rewrite done by an apiserver still on the old seed would leave the data where it was. An
// apiserver records the key_id each KMS v2 Status returned in the alpha metric
// apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{provider_name,
// key_id_hash="sha256:<hex of sha256(key_id)>", apiserver_id_hash} (k8s.io/apiserver
// .../envelope/metrics), and re-seeds right after, inside the same health check. Asking
// /healthz/kms-providers runs that check whenever its 20 s cache has expired, which is sooner
// than the once-a-minute background poll; the check holds a lock while it re-seeds, so a 200
// after the metric shows the new key_id means the new seed is in place.
import { BrokerError } from '../errors.ts';
import type { KubeApi } from './kube-client.ts';

const METRIC = 'apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds';

export interface StatusSeries {
  readonly provider: string;
  readonly keyIdHash: string;
  readonly seconds: number;
}

/** The Status key_id series of an apiserver's /metrics text. */
export function statusSeries(metrics: string): StatusSeries[] {
  const found: StatusSeries[] = [];
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${METRIC}{`)) continue;
    const close = line.lastIndexOf('}');
    const labels = new Map<string, string>();
    for (const match of line.slice(METRIC.length + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels.set(match[1] as string, match[2] as string);
    const seconds = Number(
      line
        .slice(close + 1)
        .trim()
        .split(/\s+/)[0],
    );
    const keyIdHash = labels.get('key_id_hash');
    if (keyIdHash === undefined || !Number.isFinite(seconds)) continue;
    found.push({ provider: labels.get('provider_name') ?? '', keyIdHash, seconds });
  }
  return found;
}

/**
 * True when some KMS provider's latest Status returned the key_id with this hash: its series is
 * at least as recent as every other series of the same provider.
 */
export function pickedUp(series: readonly StatusSeries[], keyIdHash: string): boolean {
  return series.some(
    ours =>
      ours.keyIdHash === keyIdHash &&
      series.every(other => other.provider !== ours.provider || other.seconds <= ours.seconds),
  );
}

export interface ReseedOptions {
  readonly timeoutMs: number;
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Told once per apiserver when it is found on the key_id. */
  readonly onReady?: (server: string, waitedMs: number) => void;
}

interface Seen {
  healthz: string;
  series: StatusSeries[];
}

const realSleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));

async function look(api: KubeApi, server: string, keyIdHash: string, seen: Seen): Promise<boolean> {
  const health = await api.request('GET', '/healthz/kms-providers', undefined, server);
  seen.healthz = health.status === 200 ? 'ok' : `HTTP ${health.status}: ${health.text.trim().slice(-200)}`;
  const metrics = await api.request('GET', '/metrics', undefined, server);
  if (metrics.status !== 200) {
    seen.healthz += `; /metrics HTTP ${metrics.status}`;
    return false;
  }
  seen.series = statusSeries(metrics.text);
  if (!pickedUp(seen.series, keyIdHash)) return false;
  // The metric moves just before the re-seed, inside the locked check: one more check waits it out.
  const after = await api.request('GET', '/healthz/kms-providers', undefined, server);
  seen.healthz = after.status === 200 ? 'ok' : `HTTP ${after.status}`;
  return after.status === 200;
}

/** Waits until every apiserver in `servers` writes under the key_id; RESEED_TIMEOUT otherwise. */
export async function waitForReseed(
  api: KubeApi,
  servers: readonly string[],
  keyId: string,
  keyIdHash: string,
  options: ReseedOptions,
): Promise<void> {
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? realSleep;
  const pollMs = options.pollMs ?? 2000;
  const started = now();
  const deadline = started + options.timeoutMs;
  const pending = new Map<string, Seen>(
    servers.map(server => [server, { healthz: 'not asked', series: [] }]),
  );
  const rounds = Math.ceil(options.timeoutMs / pollMs) + 1;
  for (let round = 0; round < rounds; round++) {
    for (const [server, seen] of pending) {
      options.signal?.throwIfAborted();
      let ready = false;
      try {
        ready = await look(api, server, keyIdHash, seen);
      } catch (error) {
        seen.healthz = error instanceof Error ? error.message : String(error);
      }
      if (ready) {
        pending.delete(server);
        options.onReady?.(server, now() - started);
      }
    }
    if (pending.size === 0) return;
    if (now() >= deadline) break;
    await sleep(Math.min(pollMs, Math.max(0, deadline - now())));
  }
  const [server, seen] = [...pending][0] as [string, Seen];
  const latest = [...seen.series].sort((a, b) => b.seconds - a.seconds)[0];
  const sees =
    latest === undefined
      ? 'it reports no KMS v2 Status at all (no kms v2 provider in its EncryptionConfiguration, or /metrics not readable)'
      : `its last Status returned key_id hash ${latest.keyIdHash} (provider ${latest.provider})`;
  throw new BrokerError(
    'RESEED_TIMEOUT',
    `apiserver ${server} has not picked up key_id ${keyId} (${keyIdHash}) within ${Math.round(options.timeoutMs / 1000)} s: ${sees}; /healthz/kms-providers: ${seen.healthz}` +
      `${pending.size > 1 ? `; ${pending.size - 1} more apiserver(s) not ready either` : ''}. Nothing was rewritten. ` +
      `Check that its EncryptionConfiguration's kms provider uses this broker's socket and that the broker is healthy (kms-broker status), then run migrate again (a longer --wait-timeout), or --no-wait if you have checked the apiservers yourself`,
  );
}
