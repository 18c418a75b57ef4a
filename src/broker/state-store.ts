// The key registry's persistent form, in one JSON file written atomically (temp file,
// fsync, rename, fsync of the folder) so a crash never leaves it half-written. A missing
// file is normal (first start: rebuilt from the backends); a corrupt one stops start-up and
// is never overwritten, because it may be the only record of which versions are retired.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { watchFile, unwatchFile, type Stats } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { describeSchemaErrors } from '../config/schema-errors.ts';
import { BrokerError } from '../errors.ts';

const versionSchema = Type.Object(
  {
    version: Type.String({ minLength: 1, maxLength: 128 }),
    fingerprint: Type.String({ minLength: 1, maxLength: 512 }),
    createdAt: Type.String({ minLength: 1 }),
    state: Type.Union([Type.Literal('active'), Type.Literal('retired')]),
    /** When a Decrypt last needed this version (flushed periodically, not per call). */
    lastDecryptAt: Type.Optional(Type.String({ minLength: 1 })),
    decryptCount: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const failoverSchema = Type.Object(
  {
    order: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
    wrap: Type.Union([Type.Literal('all'), Type.Literal('first')]),
  },
  { additionalProperties: false },
);

const stateSchema = Type.Object(
  {
    format: Type.Literal(1),
    generation: Type.Integer({ minimum: 0 }),
    backends: Type.Record(
      Type.String(),
      Type.Object(
        { writeVersion: Type.String({ minLength: 1 }), versions: Type.Array(versionSchema, { minItems: 1 }) },
        { additionalProperties: false },
      ),
    ),
    /**
     * A failover setting changed at run time (admin API), with the config's setting it
     * replaced: when the config file is edited later, the file wins again.
     */
    failover: Type.Optional(
      Type.Object({ current: failoverSchema, basedOn: failoverSchema }, { additionalProperties: false }),
    ),
  },
  { additionalProperties: false },
);

export type FailoverSetting = Static<typeof failoverSchema>;
export type StoredVersion = Static<typeof versionSchema>;
export type BrokerState = Static<typeof stateSchema>;

const validateState = new Ajv({ strict: true }).compile<BrokerState>(stateSchema);

export interface StateStore {
  /** The stored state, or undefined when there is none yet. Throws STATE_CORRUPT. */
  load(): Promise<BrokerState | undefined>;
  save(state: BrokerState): Promise<void>;
  /** Calls `onChange` when another process (e.g. `kms-broker rotate`) rewrites the file. */
  watch(onChange: () => void, intervalMs: number): () => void;
}

export function fileStateStore(path: string): StateStore {
  return {
    async load() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new BrokerError(
          'STATE_CORRUPT',
          `cannot read state file ${path}: ${(error as NodeJS.ErrnoException).code}`,
        );
      }
      return parseState(text, path);
    },

    async save(state) {
      const folder = dirname(path);
      await mkdir(folder, { recursive: true, mode: 0o700 });
      const temp = join(folder, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
      try {
        const file = await open(temp, 'wx', 0o600);
        try {
          await file.writeFile(JSON.stringify(state, null, 2) + '\n');
          await file.sync();
        } finally {
          await file.close();
        }
        await rename(temp, path);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
      const dir = await open(folder, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    },

    watch(onChange, intervalMs) {
      // Polling, not fs.watch: it survives the rename that replaces the file and works
      // on every filesystem a state folder may live on.
      const listener = (current: Stats, previous: Stats) => {
        if (
          current.mtimeMs !== previous.mtimeMs ||
          current.ino !== previous.ino ||
          current.size !== previous.size
        ) {
          onChange();
        }
      };
      watchFile(path, { interval: intervalMs, persistent: false }, listener);
      return () => unwatchFile(path, listener);
    },
  };
}

export function parseState(text: string, source: string): BrokerState {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BrokerError(
      'STATE_CORRUPT',
      `state file ${source} is not valid JSON; restore it from a backup or move it away to rebuild from the backends`,
    );
  }
  if (!validateState(value)) {
    throw new BrokerError(
      'STATE_CORRUPT',
      `state file ${source} is invalid: ${describeSchemaErrors(validateState.errors)}; restore it from a backup or move it away to rebuild from the backends`,
    );
  }
  for (const [name, backend] of Object.entries(value.backends)) {
    if (!backend.versions.some(version => version.version === backend.writeVersion)) {
      throw new BrokerError(
        'STATE_CORRUPT',
        `state file ${source}: backend ${name} writes with version ${backend.writeVersion}, which it does not list`,
      );
    }
  }
  return value;
}
