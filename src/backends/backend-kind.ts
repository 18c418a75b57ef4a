// What a backend kind brings to the broker, in one place: its `type`, its config schema, the
// rules a schema cannot express, and a loader of its module. The config and the registry
// both read the list of kinds (kinds.ts), so a new kind is its folder plus one line there.
import type { Static, TObject } from '@sinclair/typebox';
import type { Logger } from '../log.ts';
import type { SecretReader } from '../secrets.ts';
import type { RuleViolation } from './config-schema.ts';
import type { KekBackend } from './kek.ts';

export interface BackendDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
}

/**
 * One backend kind. Methods rather than function-valued properties: a kind of a narrower
 * config is then usable where any kind is, once its `type` has picked it.
 */
export interface BackendKind<Schema extends TObject = TObject> {
  readonly type: Static<Schema>['type'] & string;
  readonly schema: Schema;
  /** The rules the schema cannot express; called only with a config the schema accepted. */
  check(config: Static<Schema>): RuleViolation | undefined;
  /**
   * Builds a backend. The kind's module (and its SDK) is imported here, on first use: the
   * four cloud SDKs together cost over a second of start-up, paid on every restart by
   * brokers that use none of them.
   */
  create(config: Static<Schema>, deps: BackendDeps): Promise<KekBackend>;
}

/** The config of one kind, from its descriptor. */
export type ConfigOf<Kind> = Kind extends BackendKind<infer Schema> ? Static<Schema> : never;
