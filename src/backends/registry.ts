// Backend kinds by config `type`. A new backend is one module plus one line here.
import type { BackendConfig } from '../config/schema.ts';
import type { SecretReader } from '../config/secrets.ts';
import type { Logger } from '../log.ts';
import type { KekBackend } from './kek.ts';
import { Pkcs11Backend } from './pkcs11/pkcs11-backend.ts';

export interface BackendDeps {
  readonly readSecret: SecretReader;
  readonly logger: Logger;
}

const factories: {
  [Type in BackendConfig['type']]: (
    config: Extract<BackendConfig, { type: Type }>,
    deps: BackendDeps,
  ) => KekBackend;
} = {
  pkcs11: (config, deps) => new Pkcs11Backend(config, deps),
};

export function createBackends(
  configs: readonly BackendConfig[],
  deps: BackendDeps,
): Map<string, KekBackend> {
  return new Map(configs.map(config => [config.name, factories[config.type](config, deps)]));
}
