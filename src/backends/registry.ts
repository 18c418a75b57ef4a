// Builds the configured backends, each by its kind (kinds.ts).
import type { BackendDeps } from './backend-kind.ts';
import { backendKind, type BackendConfig } from './kinds.ts';
import type { KekBackend } from './kek.ts';

export function createBackend(config: BackendConfig, deps: BackendDeps): Promise<KekBackend> {
  return backendKind(config.type).create(config, deps);
}

export async function createBackends(
  configs: readonly BackendConfig[],
  deps: BackendDeps,
): Promise<Map<string, KekBackend>> {
  const backends = await Promise.all(configs.map(config => createBackend(config, deps)));
  return new Map(backends.map(backend => [backend.name, backend]));
}
