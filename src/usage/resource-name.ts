// Which resource a stored key belongs to, named as an EncryptionConfiguration names it. The
// apiserver stores `<prefix><resource>/[<namespace>/]<name>` for core and most built-in
// resources and `<prefix><group>/<resource>/...` for groups served by their own storage
// (CRDs, apiextensions, apiregistration). A few core resources keep historical prefixes
// (k8s.io/apiserver storage_factory.go, specialDefaultResourcePrefixes).

const SPECIAL_PREFIXES: ReadonlyMap<string, string> = new Map([
  ['services/specs', 'services'],
  ['services/endpoints', 'endpoints'],
  ['minions', 'nodes'],
  ['controllers', 'replicationcontrollers'],
  ['ingress', 'ingresses.networking.k8s.io'],
]);

/** What keys that name no resource (the prefix itself, an empty segment) are counted as. */
export const NO_RESOURCE = '(none)';
const MAX_RESOURCE_LENGTH = 253;

/** The resource of `key` under `prefix` (the key is known to start with the prefix). */
export function resourceOf(key: string, prefix: string): string {
  const segments = key.slice(prefix.length).split('/');
  const [first = '', second] = segments;
  if (second !== undefined) {
    const special = SPECIAL_PREFIXES.get(`${first}/${second}`);
    if (special !== undefined) return special;
  }
  const special = SPECIAL_PREFIXES.get(first);
  if (special !== undefined && segments.length > 1) return special;
  if (first === '') return NO_RESOURCE;
  // A group has a dot (CRD groups must; built-in groups under their own prefix do); below
  // it at least the resource and an object name.
  if (first.includes('.') && second !== undefined && second !== '' && segments.length > 2)
    return bounded(`${second}.${first}`);
  return bounded(first);
}

function bounded(name: string): string {
  return name.length > MAX_RESOURCE_LENGTH ? name.slice(0, MAX_RESOURCE_LENGTH) : name;
}
