// The checks every backend's "rotation done in the service" test makes once the broker has
// seen a new version: it adopts it only after stableForMs, and Status then names the new key_id.
import assert from 'node:assert/strict';
import type { KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import type { BrokerProcess, LogRecord } from './broker-process.ts';

export async function expectAdoptedOnceStable(
  broker: BrokerProcess,
  client: KmsV2Client,
  seen: LogRecord,
  oldKeyId: string,
  stableForMs: number,
): Promise<LogRecord> {
  const adopted = await broker.waitForLog(record => record.msg === 'adopted a rotation done in the backend');
  assert.ok(Date.parse(adopted.time as string) - Date.parse(seen.time as string) >= stableForMs);
  const status = await client.status();
  assert.equal(status.key_id, adopted.keyId);
  assert.notEqual(status.key_id, oldKeyId);
  return adopted;
}
