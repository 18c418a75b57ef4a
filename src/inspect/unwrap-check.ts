// Whether the broker this CLI reaches could unwrap a wrap now, from what its admin API says
// (GET /v1/backends and GET /v1/keys, viewer role; the CLI hands in the request). The broker is optional: without it, or when
// it does not answer, every verdict is "unknown" and the command still explains the value.
import { ESCROW_MECHANISM } from '../escrow/hybrid-wrap.ts';
import type { WrapReading } from '../usage/stored-format.ts';
import type { UnwrapVerdict } from './explain.ts';

/** What the broker knows of its backends and their key versions. */
export interface BrokerView {
  readonly backends: ReadonlyMap<string, { readonly healthy: boolean; readonly reason?: string }>;
  /** Per backend, each version's role: write, active or retired. */
  readonly roles: ReadonlyMap<string, ReadonlyMap<string, string>>;
}

export type BrokerLookup =
  | { readonly reached: true; readonly view: BrokerView }
  | { readonly reached: false; readonly reason: string };

interface BackendsBody {
  backends?: { name?: unknown; healthy?: unknown; reason?: unknown }[];
}
interface KeysBody {
  backends?: Record<string, { version?: unknown; role?: unknown }[]>;
}

/** One GET of the admin API; throws when the broker cannot be reached. */
export type AdminGet = (path: string) => Promise<{ readonly status: number; readonly body: unknown }>;

export async function lookUpBroker(get: AdminGet): Promise<BrokerLookup> {
  try {
    const backends = await get('/v1/backends');
    const keys = await get('/v1/keys');
    const backendList = (backends.body as BackendsBody).backends;
    const keyMap = (keys.body as KeysBody).backends;
    if (backends.status !== 200 || !Array.isArray(backendList))
      return { reached: false, reason: `the broker answered GET /v1/backends with HTTP ${backends.status}` };
    if (keys.status !== 200 || typeof keyMap !== 'object')
      return { reached: false, reason: `the broker answered GET /v1/keys with HTTP ${keys.status}` };
    return {
      reached: true,
      view: {
        backends: new Map(
          backendList.map(backend => [
            String(backend.name),
            {
              healthy: backend.healthy === true,
              ...(typeof backend.reason === 'string' && { reason: backend.reason }),
            },
          ]),
        ),
        roles: new Map(
          Object.entries(keyMap).map(([backend, versions]) => [
            backend,
            new Map(versions.map(version => [String(version.version), String(version.role)])),
          ]),
        ),
      },
    };
  } catch (error) {
    return { reached: false, reason: (error as Error).message };
  }
}

/** The verdict on one wrap: the first reason it could not be unwrapped, else yes. */
export function verdictFor(lookup: BrokerLookup, wrap: WrapReading): UnwrapVerdict {
  // No broker ever opens an escrow wrap: that takes the offline shares.
  if (wrap.mechanism === ESCROW_MECHANISM)
    return { now: 'no', reason: `escrow wrap: opens offline with the shares of escrow key ${wrap.version}` };
  if (!lookup.reached) return { now: 'unknown', reason: 'no broker reached' };
  const backend = lookup.view.backends.get(wrap.backend);
  if (backend === undefined) return { now: 'no', reason: `no backend '${wrap.backend}' in this broker` };
  const role = lookup.view.roles.get(wrap.backend)?.get(wrap.version);
  if (role === undefined) return { now: 'no', reason: 'version unknown to this broker' };
  if (role === 'retired') return { now: 'no', reason: 'version retired; kms-broker restore undoes it' };
  if (!backend.healthy)
    return {
      now: 'no',
      reason: `backend unhealthy${backend.reason === undefined ? '' : ` (${backend.reason})`}`,
    };
  return { now: 'yes' };
}
