// The escrow backend: wraps seeds to a public key whose private half exists only as Shamir
// shares held offline, so that an etcd backup stays readable after every online key is gone.
// It is write-only: the broker never asks it to unwrap (only `kms-broker recover`, given the
// shares, opens its wraps), never counts its wrap towards a successful Encrypt, and never
// lets it write the ciphertext itself. Its one "version" is the key pair, named by its
// fingerprint, so an envelope says which shares open it.
import { BrokerError } from '../../errors.ts';
import { ESCROW_MECHANISM, sealToEscrow } from '../../escrow/hybrid-wrap.ts';
import {
  fingerprint,
  parsePublicKeyFile,
  publicKeyDigest,
  type EscrowPublicKey,
} from '../../escrow/key-files.ts';
import type { BackendDeps } from '../backend-kind.ts';
import type { KekBackend, KeyVersionInfo, WrapRequest } from '../kek.ts';
import type { EscrowBackendConfig } from './escrow-schema.ts';

export class EscrowBackend implements KekBackend {
  readonly name: string;
  readonly type = 'escrow';
  readonly mechanism = ESCROW_MECHANISM;
  readonly writeOnly = true;
  readonly autoCreate = false;
  readonly autoCreateOption = 'publicKeyFile';
  readonly #publicKey: EscrowPublicKey;
  readonly #version: KeyVersionInfo;

  constructor(config: EscrowBackendConfig, deps: BackendDeps) {
    this.name = config.name;
    // Read and checked when the config loaded; parsed again here for its key objects.
    this.#publicKey = parsePublicKeyFile(
      deps.readFile(config.publicKeyFile).toString('utf8'),
      config.publicKeyFile,
    );
    this.#version = {
      version: fingerprint(this.#publicKey),
      fingerprint: `escrow:${publicKeyDigest(this.#publicKey)}`,
    };
  }

  open(): Promise<void> {
    return Promise.resolve();
  }

  listVersions(): Promise<KeyVersionInfo[]> {
    return Promise.resolve([this.#version]);
  }

  createVersion(): Promise<KeyVersionInfo> {
    return Promise.reject(
      new BrokerError(
        'ESCROW_WRITE_ONLY',
        `backend ${this.name} is an escrow key, made offline: run \`kms-broker escrow init\`, point publicKeyFile at its escrow-public.pem on every node, and restart`,
      ),
    );
  }

  wrap(request: WrapRequest): Promise<Buffer> {
    if (request.keyVersion !== this.#version.version) {
      return Promise.reject(
        new BrokerError(
          'UNKNOWN_KEY_VERSION',
          `backend ${this.name} holds escrow key ${this.#version.version}, not ${request.keyVersion}`,
        ),
      );
    }
    return Promise.resolve(sealToEscrow(this.#publicKey, request.plaintext, request.aad));
  }

  unwrap(): Promise<Buffer> {
    return Promise.reject(
      new BrokerError(
        'ESCROW_WRITE_ONLY',
        `backend ${this.name} is an escrow key: its wraps open only offline, with \`kms-broker recover\` and the escrow shares`,
      ),
    );
  }

  /** Nothing to reach: the key is in memory. */
  probe(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
