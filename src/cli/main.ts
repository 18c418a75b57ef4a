#!/usr/bin/env node
// The kms-broker command line: serve, verify, rotate.
import { Command } from 'commander';
import { toBrokerError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { serveCommand } from './serve.ts';
import { verifyCommand } from './verify.ts';
import { rotateCommand } from './rotate.ts';

const program = new Command()
  .name('kms-broker')
  .description('Kubernetes KMS v2 plugin fronting HSMs, Vault/OpenBao Transit and cloud KMSes')
  .version(VERSION)
  .showHelpAfterError();

program
  .command('serve')
  .description('serve KMS v2 on the configured unix socket')
  .requiredOption('-c, --config <file>', 'YAML configuration file')
  .action(async (options: { config: string }) => serveCommand(options.config));

program
  .command('verify')
  .description('Status, Encrypt 32 random bytes, Decrypt, compare: exit 0 only when all hold')
  .requiredOption('-s, --socket <path>', 'the broker socket')
  .option('--timeout <ms>', 'per-call timeout', '3000')
  .action(async (options: { socket: string; timeout: string }) => {
    process.exitCode = await verifyCommand(options.socket, Number(options.timeout));
  });

program
  .command('rotate')
  .description('create a new key version and make it the write version (a running broker adopts it)')
  .requiredOption('-c, --config <file>', 'YAML configuration file')
  .option('-b, --backend <name>', 'backend to rotate (default: the first in failover.order)')
  .action(async (options: { config: string; backend?: string }) =>
    rotateCommand(options.config, options.backend),
  );

try {
  await program.parseAsync();
} catch (error) {
  const brokerError = toBrokerError(error);
  process.stderr.write(`kms-broker: ${brokerError.code}: ${brokerError.message}\n`);
  process.exitCode = 1;
}
