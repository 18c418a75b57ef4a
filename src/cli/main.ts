#!/usr/bin/env node
// The kms-broker command line: serve and verify on the KMS socket, encryption-config from the
// config file; everything else over the admin API. Exit codes: 0 done, 1 refused or failed,
// 2 usage, 3 broker unreachable (drill, recover: some value is not recoverable; hsm-probe: no mechanism works), 4 (serve) no
// restart can mend it, 5 (status) serving but degraded, 6 (migrate, rotate --complete) the
// apiservers have not picked up the key_id yet.
//
// The commands are registered by group (*-commands.ts); each loads its own module only when
// it runs: `kms-broker keys` need not load the HSM, Vault and gRPC stacks that `serve` needs,
// so scripts get answers fast.
import { Command, CommanderError } from 'commander';
import { atStartOf, toBrokerError, type BrokerError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { UnreachableError } from './unreachable.ts';
import { EXIT_USAGE } from './command-options.ts';
import { registerHsmCommands } from './hsm-commands.ts';
import { registerKeyCommands } from './key-commands.ts';
import { registerFailoverCommands, registerReadCommands } from './read-commands.ts';
import { registerEscrowCommands, registerRecoveryCommands } from './recovery-commands.ts';
import { registerServeCommands } from './serve-commands.ts';

const EXIT_UNREACHABLE = 3;
/**
 * `serve` failed for a reason no restart can mend: a supervisor should stop restarting
 * (systemd: RestartPreventExitStatus=4). A wrong PIN retried on every restart can lock an
 * HSM token for good; a corrupt state file or a bad config only fill the logs. Which errors
 * those are, the error catalog says (`atStart: 'needs-operator'`, src/errors.ts).
 */
const EXIT_NEEDS_OPERATOR = 4;

/** Set when `serve` runs: its failures may end in EXIT_NEEDS_OPERATOR. */
let serving = false;

function exitCodeOf(error: BrokerError): number {
  return serving && atStartOf(error) === 'needs-operator' ? EXIT_NEEDS_OPERATOR : 1;
}

// A reader that stops early (`kms-broker verify | head -c1`) wants no more output; it is no
// failure of the command, whose exit code stays its own. Other write errors still throw.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
});

const program = new Command()
  .name('kms-broker')
  .description('Kubernetes KMS v2 plugin fronting HSMs, Vault/OpenBao Transit and cloud KMSes')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

// In the order `kms-broker --help` lists them.
registerServeCommands(program, {
  onServe: () => {
    serving = true;
  },
});
registerReadCommands(program);
registerKeyCommands(program);
registerFailoverCommands(program);
registerEscrowCommands(program);
registerHsmCommands(program);
registerRecoveryCommands(program);

try {
  await program.parseAsync();
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and --version end here too, with exit code 0.
    process.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
  } else if (error instanceof UnreachableError) {
    process.stderr.write(`kms-broker: ${error.message}\n`);
    process.exitCode = EXIT_UNREACHABLE;
  } else {
    const brokerError = toBrokerError(error);
    process.stderr.write(`kms-broker: ${brokerError.code}: ${brokerError.message}\n`);
    process.exitCode = exitCodeOf(brokerError);
  }
}
