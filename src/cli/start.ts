// The CLI's entry (bin/kms-broker runs it): turns on Node's compile cache before the CLI's
// modules load, so that a command does not compile the same JavaScript on every run (the
// schema and YAML libraries a config read needs are most of a command's start time).
// The cache is the user's own ($XDG_CACHE_HOME or ~/.cache, kms-broker/compile-cache), never
// a shared folder another user could plant code in. `serve` writes nothing but its state, so
// it runs without; NODE_DISABLE_COMPILE_CACHE=1 turns the cache off everywhere.
import { enableCompileCache } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

if (process.argv[2] !== 'serve') {
  const cacheHome = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  // A home that cannot be written (a read-only root) only means no cache: Node reports it, never throws.
  enableCompileCache(join(cacheHome, 'kms-broker', 'compile-cache'));
}

await import('./main.ts');
