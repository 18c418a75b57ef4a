// What a broker makes of its peers' records: who is registered, whether all advertise the
// committed key_id, the warning when they have not for longer than the bound, and its answer
// to a peer's proposal (confirmed or refused with the reason, once per proposal).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ClusterPeers } from '../../src/cluster/cluster-peers.ts';
import { clusterKeys, encodeRecord, type Ack, type MemberRecord } from '../../src/cluster/records.ts';
import { emptyState } from '../../src/broker/state/state-schema.ts';
import { BrokerError } from '../../src/errors.ts';
import { until } from '../helpers/core-broker.ts';
import { memoryLog } from '../helpers/memory-log.ts';

const keys = clusterKeys('/kms-broker/unit/');

function member(node: string, keyId: string): MemberRecord {
  return { node, version: 'test', keyId, unwrappable: [], startedAt: 'x', seenAt: 'y' };
}

function kv(key: string, value: object, modRevision = '5') {
  return { key, value: encodeRecord(value), modRevision, createRevision: '1', lease: '0' };
}

function peers(clock: { now: number }) {
  const log = memoryLog();
  const cluster = new ClusterPeers({
    name: 'unit',
    node: 'node-a',
    keys,
    convergenceWarnMs: 10_000,
    logger: pino({ level: 'debug' }, log.stream),
    now: () => new Date(clock.now),
  });
  return { cluster, log };
}

describe('cluster peers', () => {
  it('is converged only while every member advertises the committed key_id, and warns once past the bound', () => {
    const clock = { now: Date.UTC(2026, 11, 7) };
    const { cluster, log } = peers(clock);
    try {
      cluster.committedKeyId('k2');
      cluster.replaceAll([
        kv(keys.member('node-a'), member('node-a', 'k2')),
        kv(keys.member('node-b'), member('node-b', 'k1')),
      ]);
      const view = cluster.view();
      assert.equal(view.converged, false);
      assert.deepEqual(
        view.members.map(entry => [entry.node, entry.self]),
        [
          ['node-a', true],
          ['node-b', false],
        ],
      );
      const warnings = () =>
        log.records().filter(record => String(record.msg).startsWith('brokers of the cluster advertise'));
      clock.now += 9_000;
      cluster.apply({ type: 'put', kv: kv(keys.member('node-c'), member('node-c', 'k2'), '6') });
      assert.equal(warnings().length, 0, 'not yet past the bound');
      clock.now += 2_000;
      cluster.apply({ type: 'put', kv: kv(keys.member('node-c'), member('node-c', 'k2'), '7') });
      cluster.apply({ type: 'put', kv: kv(keys.member('node-c'), member('node-c', 'k2'), '8') });
      assert.equal(warnings().length, 1, 'warned once per disagreement');
      assert.ok(cluster.view().disagreeingSince !== undefined);
      cluster.apply({ type: 'put', kv: kv(keys.member('node-b'), member('node-b', 'k2'), '9') });
      assert.equal(cluster.view().converged, true);
      assert.equal(cluster.view().disagreeingSince, undefined);
      cluster.apply({ type: 'delete', kv: kv(keys.member('node-c'), {}, '10') });
      assert.deepEqual(
        cluster.view().members.map(entry => entry.node),
        ['node-a', 'node-b'],
      );
      assert.equal(cluster.nextRevision(), '11');
    } finally {
      cluster.close();
    }
  });

  it("answers a peer's proposal once, with the reason when it cannot confirm, and never its own", async () => {
    const { cluster } = peers({ now: Date.UTC(2026, 11, 7) });
    const sent: Ack[] = [];
    let confirms = 0;
    try {
      cluster.attach(
        {
          advertised: () => ({ keyId: 'k1', unwrappable: [] }),
          confirm: () => {
            confirms++;
            return Promise.reject(new BrokerError('PROMOTION_REFUSED', 'hsm holds no key version 3 here'));
          },
        },
        (_id, ack) => {
          sent.push(ack);
          return Promise.resolve();
        },
      );
      const proposal = {
        id: 'proposal-0001',
        node: 'node-b',
        keyId: 'k2',
        proposedAt: 'now',
        state: emptyState(),
      };
      cluster.apply({ type: 'put', kv: kv(keys.proposal, proposal, '12') });
      cluster.apply({ type: 'put', kv: kv(keys.proposal, proposal, '12') });
      await until(
        () => sent.length,
        length => length === 1,
        'the answer sent',
      );
      assert.deepEqual(sent, [{ node: 'node-a', ok: false, reason: 'hsm holds no key version 3 here' }]);
      assert.equal(cluster.view().proposal?.node, 'node-b');
      cluster.apply({
        type: 'put',
        kv: kv(keys.proposal, { ...proposal, id: 'proposal-0002', node: 'node-a' }, '13'),
      });
      assert.equal(confirms, 1, 'its own proposal is not answered (confirm starts synchronously)');
    } finally {
      cluster.close();
    }
  });
});
