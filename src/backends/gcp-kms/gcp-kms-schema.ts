import { Type, type Static } from '@sinclair/typebox';
import {
  absolutePath,
  backendNameSchema,
  endpointSchema,
  remoteServiceFields,
  strict,
  type RuleViolation,
} from '../config-schema.ts';

/** Cloud KMS resource IDs: key rings and keys are 1–63 letters, digits, `_` or `-`. */
const resourceId = '[A-Za-z0-9_-]{1,63}';

export const gcpKmsBackendSchema = Type.Object(
  {
    name: backendNameSchema,
    type: Type.Literal('gcp-kms'),
    /** The CryptoKey (purpose ENCRYPT_DECRYPT): projects/P/locations/L/keyRings/R/cryptoKeys/K. */
    keyName: Type.String({
      pattern: `^projects/[^/\\s]{1,100}/locations/[a-z0-9-]{1,63}/keyRings/${resourceId}/cryptoKeys/${resourceId}$`,
    }),
    /**
     * A service-account key or external-account (workload identity federation) JSON file.
     * Without it, Application Default Credentials apply.
     */
    credentialsFile: Type.Optional(absolutePath),
    /** Private endpoint (Private Service Connect, a regional endpoint) instead of cloudkms.googleapis.com. */
    endpoint: Type.Optional(endpointSchema),
    /** CA bundle (PEM) the endpoint's certificate must chain to, trusted by this backend only. */
    caFile: Type.Optional(absolutePath),
    ...remoteServiceFields,
    /** Whether start-up may create the CryptoKey (software protection) when it does not exist. */
    createIfMissing: Type.Boolean({ default: false }),
  },
  strict,
);
export type GcpKmsBackendConfig = Static<typeof gcpKmsBackendSchema>;

export function checkGcpKms(config: GcpKmsBackendConfig): RuleViolation | undefined {
  // gRPC sends call credentials (the OAuth token) only over TLS.
  if (config.endpoint !== undefined && !config.endpoint.startsWith('https://')) {
    return {
      path: 'endpoint',
      message: 'Cloud KMS needs an https:// endpoint: credentials are only sent over TLS',
    };
  }
  if (config.caFile !== undefined && config.endpoint === undefined) {
    return { path: 'caFile', message: 'a private CA needs a private endpoint: set endpoint too' };
  }
  return undefined;
}
