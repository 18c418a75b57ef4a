import { randomBytes } from 'node:crypto';
import { createKmsV2Client } from '../grpc/kms-v2-client.ts';

/** The health check operators script by hand, as one command. Returns the exit code. */
export async function verifyCommand(socketPath: string, timeoutMs: number): Promise<number> {
  const client = createKmsV2Client(socketPath, timeoutMs);
  const report = (check: string, ok: boolean, detail: string) =>
    process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${check}: ${detail}\n`);
  try {
    const status = await client.status();
    const statusOk = status.version === 'v2' && status.healthz === 'ok' && status.key_id.length > 0;
    report('status', statusOk, `version=${status.version} healthz=${status.healthz} key_id=${status.key_id}`);
    const seed = randomBytes(32);
    const encrypted = await client.encrypt(seed);
    const keyIdMatches = encrypted.key_id === status.key_id;
    report(
      'encrypt',
      keyIdMatches,
      `${encrypted.ciphertext.length}-byte ciphertext, key_id ${keyIdMatches ? 'matches Status' : `differs: ${encrypted.key_id}`}`,
    );
    const decrypted = await client.decrypt({
      ciphertext: encrypted.ciphertext,
      key_id: encrypted.key_id,
      annotations: encrypted.annotations,
    });
    const roundTrip = decrypted.plaintext.equals(seed);
    report('decrypt', roundTrip, roundTrip ? 'plaintext matches' : 'plaintext differs');
    return statusOk && keyIdMatches && roundTrip ? 0 : 1;
  } catch (error) {
    const { code, details } = error as { code?: number; details?: string };
    report('call', false, `gRPC ${code ?? '?'}: ${details ?? (error as Error).message}`);
    return 1;
  } finally {
    client.close();
  }
}
