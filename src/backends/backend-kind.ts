// What a backend kind brings to the broker, in one place: its `type`, its config schema, the
// rules a schema cannot express, and a loader of its module. The config and the registry
// both read the list of kinds (kinds.ts), so a new kind is its folder plus one line there.
import type { Static, TObject } from '@sinclair/typebox';
import type { FileReader } from '../file-reader.ts';
import type { Logger } from '../log.ts';
import type { SecretReader } from '../secrets.ts';
import type { RuleViolation } from './config-schema.ts';
import type { KekBackend } from './kek.ts';

export interface BackendDeps {
  readonly readSecret: SecretReader;
  /** Non-secret files the config names (CA bundles, TLS certificates and keys). */
  readonly readFile: FileReader;
  readonly logger: Logger;
}

/**
 * What a file named in the config must hold; loading the config reads and checks each one.
 * Contents of `pem-certificates` and `pem-private-key` files are kept for their users. The
 * others are secrets or libraries: checked, then read again where used (a secret may be
 * rotated, and it never sits in memory longer than its use).
 */
export type FileKind =
  /** One or more PEM certificates: a CA bundle, a certificate chain. */
  | 'pem-certificates'
  | 'pem-private-key'
  /** A secret PEM file with a certificate and its private key. */
  | 'pem-certificate-and-key'
  /** A secret JSON credentials file, an object with a `type`. */
  | 'json-credentials'
  /** A secret of any shape (a PIN, a token): readable and not empty. */
  | 'secret'
  /** A shared library the backend loads: readable and not empty. */
  | 'library'
  /** An escrow public key as `kms-broker escrow init` writes it (kept for the backend). */
  | 'escrow-public-key';

/**
 * One backend kind. Methods rather than function-valued properties: a kind of a narrower
 * config is then usable where any kind is, once its `type` has picked it.
 */
export interface BackendKind<Schema extends TObject = TObject> {
  readonly type: Static<Schema>['type'] & string;
  readonly schema: Schema;
  /** A kind that only wraps (escrow): it must sit in the failover order beside one that unwraps. */
  readonly writeOnly?: true;
  /** The rules the schema cannot express; called only with a config the schema accepted. */
  check(config: Static<Schema>): RuleViolation | undefined;
  /** The keys (dotted paths, e.g. `tls.caFile`) that name files, and what each must hold. */
  readonly files: Readonly<Record<string, FileKind>>;
  /**
   * Builds a backend. The kind's module (and its SDK) is imported here, on first use: the
   * four cloud SDKs together cost over a second of start-up, paid on every restart by
   * brokers that use none of them.
   */
  create(config: Static<Schema>, deps: BackendDeps): Promise<KekBackend>;
}

/** The config of one kind, from its descriptor. */
export type ConfigOf<Kind> = Kind extends BackendKind<infer Schema> ? Static<Schema> : never;
