// Which resources to migrate, and where the apiserver serves them. Names are written as in an
// EncryptionConfiguration: `secrets`, `configmaps` (the core group), `deployments.apps`.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { apiError, must, type KubeApi } from './kube-client.ts';

export interface GroupResource {
  /** '' for the core group. */
  readonly group: string;
  readonly resource: string;
}

/** A resource as the apiserver serves it. */
export interface ServedResource extends GroupResource {
  readonly version: string;
  readonly namespaced: boolean;
  /** `/api/v1/secrets` or `/apis/apps/v1/deployments`: the list over all namespaces. */
  readonly listPath: string;
}

/** A problem with what the user asked for: the CLI prints it as a usage error (exit 2). */
export class MigrateInputError extends Error {}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const GROUP = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function parseResource(text: string, where: string): GroupResource {
  const trimmed = text.trim();
  const dot = trimmed.indexOf('.');
  const resource = dot < 0 ? trimmed : trimmed.slice(0, dot);
  const group = dot < 0 ? '' : trimmed.slice(dot + 1);
  if (trimmed.includes('*'))
    throw new MigrateInputError(
      `${where}: '${trimmed}' is a wildcard; name the resources to migrate one by one (e.g. secrets,configmaps)`,
    );
  if (!NAME.test(resource) || (group !== '' && !GROUP.test(group)))
    throw new MigrateInputError(
      `${where}: '${trimmed}' is not a resource name; write it as in an EncryptionConfiguration: secrets, configmaps, deployments.apps`,
    );
  return { group, resource };
}

export function formatResource(resource: GroupResource): string {
  return resource.group === '' ? resource.resource : `${resource.resource}.${resource.group}`;
}

/** `--resources secrets,configmaps`: each once, in the order given. */
export function parseResourceList(list: string): GroupResource[] {
  const entries = list.split(',').filter(entry => entry.trim() !== '');
  if (entries.length === 0)
    throw new MigrateInputError('--resources: empty; name at least one resource, e.g. --resources secrets');
  const seen = new Set<string>();
  return entries
    .map(entry => parseResource(entry, '--resources'))
    .filter(resource => {
      const key = formatResource(resource);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}

interface Rule {
  readonly resources?: unknown;
  readonly providers?: unknown;
}

interface EncryptionConfiguration {
  readonly kind?: unknown;
  readonly resources?: readonly { readonly resources?: unknown; readonly providers?: unknown }[];
}

/**
 * The resources of an EncryptionConfiguration whose first (writing) provider is a KMS provider:
 * exactly what a rotation of the broker's key leaves under an old key_id.
 */
export function resourcesFromEncryptionConfig(path: string): GroupResource[] {
  const where = `--encryption-config ${path}`;
  let config: EncryptionConfiguration;
  try {
    config = parse(readFileSync(path, 'utf8')) as EncryptionConfiguration;
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error instanceof Error ? error.message : '');
    throw new MigrateInputError(`${where}: cannot read it (${reason}); give the apiserver's file`);
  }
  if (config?.kind !== 'EncryptionConfiguration' || !Array.isArray(config.resources))
    throw new MigrateInputError(
      `${where}: not an EncryptionConfiguration (kind and resources missing); give the file the apiserver reads with --encryption-provider-config`,
    );
  const found: string[] = [];
  (config.resources as readonly unknown[]).forEach((entry, index) => {
    const rule = (typeof entry === 'object' && entry !== null ? entry : {}) as Rule;
    const providers: unknown = rule.providers;
    const first: unknown = Array.isArray(providers) ? (providers as unknown[])[0] : undefined;
    if (typeof first !== 'object' || first === null || !('kms' in first)) return;
    const names: unknown = rule.resources;
    if (!Array.isArray(names))
      throw new MigrateInputError(`${where}: resources[${index}].resources is not a list`);
    for (const name of names as unknown[]) found.push(String(name));
  });
  if (found.length === 0)
    throw new MigrateInputError(
      `${where}: no resource there is written by a kms provider (none lists kms first); nothing to migrate`,
    );
  return parseResourceList(found.join(','));
}

interface ApiResourceList {
  readonly resources?: readonly { name: string; namespaced: boolean; verbs?: readonly string[] }[];
}

/** Finds the preferred version of the resource's group and whether it is namespaced. */
export async function discover(api: KubeApi, wanted: GroupResource): Promise<ServedResource> {
  let base: string;
  let version: string;
  if (wanted.group === '') {
    base = '/api/v1';
    version = 'v1';
  } else {
    const group = await api.request('GET', `/apis/${wanted.group}`);
    if (group.status === 404)
      throw new MigrateInputError(
        `resource ${formatResource(wanted)}: the apiserver serves no API group ${wanted.group}; check the name`,
      );
    if (group.status !== 200) throw apiError('GET', `/apis/${wanted.group}`, group);
    const preferred = (group.body as { preferredVersion?: { version?: string } }).preferredVersion?.version;
    if (preferred === undefined)
      throw apiError('GET', `/apis/${wanted.group}`, group, 'no preferred version');
    base = `/apis/${wanted.group}/${preferred}`;
    version = preferred;
  }
  const list = (await must(api, 'GET', base)).body as ApiResourceList;
  const entry = list.resources?.find(candidate => candidate.name === wanted.resource);
  if (entry === undefined)
    throw new MigrateInputError(
      `resource ${formatResource(wanted)}: ${base} serves no resource '${wanted.resource}'; check the name (plural, lowercase)`,
    );
  const verbs = entry.verbs ?? [];
  if (!verbs.includes('list') || !verbs.includes('update'))
    throw new MigrateInputError(`resource ${formatResource(wanted)}: cannot be listed and updated`);
  return { ...wanted, version, namespaced: entry.namespaced, listPath: `${base}/${wanted.resource}` };
}

/** The path of one object of a served resource. */
export function objectPath(resource: ServedResource, namespace: string | undefined, name: string): string {
  const base = resource.group === '' ? '/api/v1' : `/apis/${resource.group}/${resource.version}`;
  const scope =
    resource.namespaced && namespace !== undefined ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${base}${scope}/${resource.resource}/${encodeURIComponent(name)}`;
}
