// Backend health over time, for the web console: a small ring of samples per backend, kept in
// memory only (a restart starts it afresh). A sample is taken when a backend's health report
// moves on (a new probe, or a breaker change between probes from real calls), so the ring
// follows the configured probe interval without knowing it; the timer only looks, every
// second, at what the health monitor already holds in memory, and never calls a backend.
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { BackendView } from '../../broker/ports.ts';
import { BREAKER_STATES } from '../../metrics/metrics.ts';
import { problems } from '../route-support.ts';

/** Samples kept per backend: 20 minutes at the default 10 s probe interval. */
export const HISTORY_LENGTH = 120;
const LOOK_EVERY_MS = 1000;

const sampleSchema = Type.Object({
  /** The probe's time (or, for a breaker change between probes, when it was seen). */
  at: Type.String(),
  healthy: Type.Boolean(),
  breaker: Type.Union(BREAKER_STATES.map(state => Type.Literal(state))),
  probeMs: Type.Optional(Type.Number()),
  reason: Type.Optional(Type.String()),
});
export type HealthSample = Static<typeof sampleSchema>;

export const healthHistorySchema = Type.Object({
  /** How many samples each backend keeps at most, oldest dropped first. */
  limit: Type.Integer(),
  backends: Type.Record(Type.String(), Type.Array(sampleSchema)),
});

export class HealthHistory {
  readonly #source: () => readonly BackendView[];
  readonly #limit: number;
  readonly #samples = new Map<string, HealthSample[]>();
  #timer: NodeJS.Timeout | undefined;

  constructor(source: () => readonly BackendView[], limit = HISTORY_LENGTH) {
    this.#source = source;
    this.#limit = limit;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.look();
    this.#timer = setInterval(() => this.look(), LOOK_EVERY_MS).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Records a sample for each backend whose report changed since its last sample. */
  look(now = new Date()): void {
    for (const backend of this.#source()) {
      const samples = this.#samples.get(backend.name) ?? [];
      const last = samples.at(-1);
      const at = backend.lastProbeAt ?? now.toISOString();
      const moved =
        last === undefined ||
        (backend.lastProbeAt !== undefined && backend.lastProbeAt !== last.at) ||
        backend.healthy !== last.healthy ||
        backend.breaker !== last.breaker;
      if (!moved) continue;
      samples.push({
        // A breaker change between probes keeps the probe's time: say when it was seen instead.
        at: last !== undefined && at === last.at ? now.toISOString() : at,
        healthy: backend.healthy,
        breaker: backend.breaker,
        ...(backend.lastProbeMs !== undefined && { probeMs: backend.lastProbeMs }),
        ...(backend.reason !== undefined && { reason: backend.reason }),
      });
      if (samples.length > this.#limit) samples.splice(0, samples.length - this.#limit);
      this.#samples.set(backend.name, samples);
    }
  }

  view(): Static<typeof healthHistorySchema> {
    return {
      limit: this.#limit,
      backends: Object.fromEntries([...this.#samples].map(([name, samples]) => [name, [...samples]])),
    };
  }
}

/** GET /v1/backends/history (viewer), served with the console; sampling stops with the app. */
export function registerHealthHistory(app: FastifyInstance, history: HealthHistory): void {
  history.start();
  app.addHook('onClose', (_instance, done) => {
    history.stop();
    done();
  });
  app.get(
    '/v1/backends/history',
    {
      config: { role: 'viewer' },
      schema: {
        summary: 'Health samples per backend since start, oldest first (only with admin.console.enabled)',
        response: { 200: healthHistorySchema, ...problems },
      },
    },
    () => history.view(),
  );
}
