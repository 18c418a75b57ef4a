// Usage scans as `kms-broker usage` would report them, built by hand for tests of how the
// broker judges retirement, and a way to record one through the admin API.
import assert from 'node:assert/strict';
import type { ScannedWrap, UsageScan } from '../../src/broker/usage-scan.ts';
import type { AdminClient } from './admin-http.ts';

/** Wraps of one envelope, how many objects carry them, and per resource (all Secrets unless said). */
export type ScanEntry = [ScannedWrap | ScannedWrap[], number, Record<string, number>?];

/** A scan that began at `at` and found these wrap sets. */
export function usageScan(at: Date, sets: readonly ScanEntry[]): UsageScan {
  const wrapSets = sets.map(([wraps, objects, resources]) => ({
    wraps: Array.isArray(wraps) ? wraps : [wraps],
    objects,
    resources: resources ?? { secrets: objects },
  }));
  const objects = wrapSets.reduce((sum, set) => sum + set.objects, 0);
  return {
    scannedAt: at.toISOString(),
    revision: '7',
    prefix: '/registry/',
    durationMs: 5,
    objects,
    formats: { 'kms-v2': objects },
    resources: [{ resource: 'secrets', objects, formats: { 'kms-v2': objects } }],
    keyIds: [],
    wrapSets,
    undecodable: { objects: 0, resources: {} },
  };
}

/** Records a scan through POST /v1/usage/scans and checks it was kept. */
export async function recordScan(admin: AdminClient, token: string, scan: UsageScan): Promise<void> {
  const response = await admin.request('/v1/usage/scans', { method: 'POST', token, body: scan });
  assert.equal(response.status, 201, response.text);
  assert.deepEqual(response.body, {
    scannedAt: scan.scannedAt,
    revision: scan.revision,
    objects: scan.objects,
  });
}
