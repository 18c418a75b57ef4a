// After every health change and probe round: with `wrap: first`, writes go to the first
// backend of the order that is healthy (one that was down must stay closed for the
// hysteresis before it takes writes back); with `wrap: all`, a seed that went out without
// some wraps is replaced (new generation, so the apiserver re-seeds) once the missing
// backends have been healthy for the hysteresis.
import { toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { HealthMonitor } from './health/health-monitor.ts';
import type { KeySet } from './keys/key-set.ts';
import type { ThinSeeds } from './thin-seeds.ts';

export interface RebalancerDeps {
  readonly keys: KeySet;
  readonly health: HealthMonitor;
  readonly thinSeeds: ThinSeeds;
  readonly hysteresisMs: number;
  readonly logger: Logger;
  readonly now?: () => number;
}

export function createRebalancer(deps: RebalancerDeps): () => Promise<void> {
  const { keys, health, thinSeeds, hysteresisMs } = deps;
  const now = deps.now ?? Date.now;
  let running = false;

  const rebalanceFirst = async () => {
    const current = keys.current.writeKeys[0]?.backend;
    const desired = keys.failover.order.find(
      name =>
        !keys.isWriteOnly(name) &&
        (name === current ? health.health(name)?.healthy === true : health.closedFor(name, hysteresisMs)),
    );
    if (desired === undefined || desired === current) return;
    const currentDown = current !== undefined && health.health(current)?.healthy !== true;
    await keys.switchWriter(desired, currentDown ? `${current} is unhealthy` : `${desired} is healthy again`);
  };

  // A thin seed is replaced once it has been thin for the hysteresis and its missing
  // backends have been healthy that long: a load spike that times out one wrap costs at most
  // one re-seed per hysteresis, never a flip-flop.
  const healThinSeed = async () => {
    const thin = thinSeeds.get(keys.current.keyId);
    if (thin === undefined || now() - Date.parse(thin.since) < hysteresisMs) return;
    if (thin.missing.every(name => health.closedFor(name, hysteresisMs))) {
      await keys.bumpGeneration(`heal an under-replicated seed: ${thin.missing.join(', ')} healthy again`);
    }
  };

  return async () => {
    if (running) return;
    running = true;
    try {
      await (keys.current.wrap === 'first' ? rebalanceFirst() : healThinSeed());
    } catch (error) {
      deps.logger.error({ code: toBrokerError(error).code }, 'could not rebalance writes');
    } finally {
      running = false;
    }
  };
}
