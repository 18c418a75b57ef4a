import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  endpointSchema,
  remoteServiceFields,
  strict,
  type RuleViolation,
} from '../config-schema.ts';

/** A key id (UUID or multi-Region `mrk-`), a key or alias ARN, or an alias name. */
const awsKeyReference = Type.String({
  maxLength: 2048,
  pattern:
    '^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]{1,250})$',
});

export const awsKmsBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('aws-kms'),
    region: Type.String({ pattern: '^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$' }),
    /**
     * The key that wraps: an alias (recommended: the broker adopts a re-pointed alias, and
     * rotation through the broker moves it), or a fixed key id or ARN.
     */
    key: awsKeyReference,
    /** Private (VPC) endpoints, FIPS endpoints and emulators. */
    endpoint: Type.Optional(endpointSchema),
    /** A profile of the shared config and credentials files (or of `credentialsFile`). */
    profile: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.+@-]{1,64}$' })),
    /** A credentials file in the shared-credentials format; without it, the SDK's default chain. */
    credentialsFile: Type.Optional(absolutePath),
    /** With an alias as `key`: create the alias and a first key when the alias does not exist. */
    createIfMissing: Type.Boolean({ default: false }),
    rotation: Type.Object(
      {
        /** Rotation through the broker creates a new key and moves the alias to it. */
        createKeys: Type.Boolean({ default: false }),
        /**
         * The backend's other keys, oldest first: keys that older envelopes need, and (without
         * createKeys) the keys a rotation through the broker moves the alias to, in this order.
         */
        keys: Type.Array(awsKeyReference, { maxItems: 32, uniqueItems: true, default: [] }),
      },
      { ...strict, default: {} },
    ),
    ...remoteServiceFields,
  },
  strict,
);
export type AwsKmsBackendConfig = Static<typeof awsKmsBackendSchema>;

export function isAwsAlias(key: string): boolean {
  return key.startsWith('alias/') || /^arn:[^:]+:kms:[^:]*:[0-9]{12}:alias\//.test(key);
}

export function checkAwsKms(config: AwsKmsBackendConfig): RuleViolation | undefined {
  const alias = isAwsAlias(config.key);
  // Without an alias, nothing in AWS says which key is current: after a restart, or on another
  // broker of the control plane, a key switched to by rotation could not be found again.
  if (!alias && (config.rotation.createKeys || config.createIfMissing)) {
    return {
      path: 'key',
      message: 'rotation.createKeys and createIfMissing need an alias as key (alias/<name>)',
    };
  }
  // An alias names whatever key it points at today; a list entry must name one key for good.
  if (config.rotation.keys.some(isAwsAlias)) {
    return { path: 'rotation.keys', message: 'list keys by id or ARN, not by alias' };
  }
  return undefined;
}
