// pino JSON logs. Redaction is a safety net: the code never puts secrets in log fields
// in the first place, but a future `log.info({ request })` must not leak a DEK or a PIN.
import { pino, type Logger, type DestinationStream, type LevelWithSilent } from 'pino';

export type { Logger };

const redactPaths = [
  'plaintext',
  '*.plaintext',
  'ciphertext',
  '*.ciphertext',
  'pin',
  '*.pin',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
];

export function createLogger(level: LevelWithSilent, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'kms-broker' },
      redact: { paths: redactPaths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // "level":"warn", not 40: what klog, Vault and zap users read, and what log pipelines
      // match on without a table of pino's numbers.
      formatters: { level: label => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}
