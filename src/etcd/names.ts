// What the operator calls each etcd setting: the usage command's flags or the config file's
// keys. Every message about an endpoint or a TLS file names the setting to change, so one
// classification of failures serves both without telling a config-file user to pass a flag.

export interface EtcdSettingNames {
  readonly endpoints: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** What the client needs etcd to grant it, for the message of a refused certificate. */
  readonly access: string;
}

/** `pass <what> with --flag` for a flag, `set <key> to <what>` for a config key. */
export function advise(name: string, what: string): string {
  return name.startsWith('-') ? `pass ${what} with ${name}` : `set ${name} to ${what}`;
}
