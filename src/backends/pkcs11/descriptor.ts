// The pkcs11 backend kind: an HSM (or SoftHSM) through its PKCS#11 library.
import type { BackendKind } from '../backend-kind.ts';
import { checkPkcs11, pkcs11BackendSchema } from './pkcs11-schema.ts';

export const pkcs11Kind: BackendKind<typeof pkcs11BackendSchema> = {
  type: 'pkcs11',
  schema: pkcs11BackendSchema,
  check: checkPkcs11,
  files: { module: 'library', pinFile: 'secret' },
  async create(config, deps) {
    const { Pkcs11Backend } = await import('./pkcs11-backend.ts');
    return new Pkcs11Backend(config, deps);
  },
};
