// `hsm-probe`: what a PKCS#11 token offers and which mechanisms work on it, before a backend
// block is written for it. The PKCS#11 stack loads only when it runs.
import type { Command } from 'commander';
import { usageError } from './command-options.ts';
import type { HsmProbeOptions } from './hsm-probe.ts';

export function registerHsmCommands(program: Command): void {
  program
    .command('hsm-probe')
    .description(
      'what a PKCS#11 token offers, which mechanisms round-trip on it (temporary session keys), and the backend block to use; exit 3 when none works',
    )
    .requiredOption('--module <path>', "the token's PKCS#11 library")
    .option('--token <label>', 'the token by label')
    .option('--token-serial <serial>', 'the token by serial number')
    .option('--slot-id <n>', 'the token by slot id')
    .option('--pin-file <file>', 'read the user PIN from this file')
    .option('--pin-env <VAR>', 'read the user PIN from this environment variable')
    .option('--key-label <label>', 'keyLabel in the recommended block', 'kms-broker-kek')
    .option('--name <name>', 'the backend name in the recommended block', 'hsm')
    .option('--all', 'list every mechanism the token offers, not only those the broker uses')
    .option('--json', 'print one JSON object for scripts')
    .addHelpText(
      'after',
      '\nLogs in once (a wrong PIN is never retried); creates only session objects and destroys them.\nExit codes: 0 some mechanism round-trips, 3 none does, 1 a failure (wrong PIN, no such token), 2 usage.\n',
    )
    .action(async (options: HsmProbeOptions, command: Command) => {
      process.exitCode = await (await import('./hsm-probe.ts')).hsmProbeCommand(options, usageError(command));
    });
}
