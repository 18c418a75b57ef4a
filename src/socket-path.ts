// Preparing the unix socket path. A socket file left by a crashed broker is removed only
// after checking that nothing answers on it; a live one means another broker serves this
// path, and we refuse to start rather than steal it. Anything that is not a socket is
// never deleted.
import { lstat, mkdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { BrokerError } from './errors.ts';

const PROBE_TIMEOUT_MS = 1000;

export async function prepareSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o750 });
  let stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new BrokerError(
      'SOCKET_PATH_INVALID',
      `cannot inspect ${path}: ${(error as NodeJS.ErrnoException).code}`,
    );
  }
  if (!stats.isSocket()) {
    throw new BrokerError(
      'SOCKET_PATH_INVALID',
      `${path} exists and is not a socket; refusing to replace it`,
    );
  }
  const answer = await probeSocket(path);
  if (answer === 'live') {
    throw new BrokerError(
      'SOCKET_IN_USE',
      `another process is serving ${path}; stop it first or choose another socket path`,
    );
  }
  if (answer === 'stale') await unlink(path).catch(() => undefined);
}

/** Connects once: a refused connection means nobody listens (stale), an accepted one live. */
function probeSocket(path: string): Promise<'live' | 'stale' | 'gone'> {
  return new Promise(resolve => {
    const socket = connect({ path });
    const timer = setTimeout(() => {
      // Accepting nothing within the timeout: something holds the socket; treat as live.
      socket.destroy();
      resolve('live');
    }, PROBE_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('live');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(error.code === 'ENOENT' ? 'gone' : 'stale');
    });
  });
}
