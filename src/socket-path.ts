// Preparing a unix socket path, and naming what went wrong when a listener cannot open.
// The socket's folder must be one only the broker's user and root can change: whoever can
// write to it can replace the socket, or put their own there while the broker restarts,
// and the apiserver would send its DEKs to them. A socket file left by a crashed broker is
// removed only after checking that nothing answers on it; a live one means another broker
// serves this path, and we refuse to start rather than steal it. Anything that is not a
// socket is never deleted.
import { lstat, mkdir, realpath, stat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { BrokerError, isBrokerError } from './errors.ts';

const PROBE_TIMEOUT_MS = 1000;

/**
 * Makes `path` ready to bind: its folder exists and is safe, and no stale socket is in the
 * way. `key` is the config key that names it (`socket`, `admin.listen`), for messages.
 */
export async function prepareSocketPath(path: string, key: string): Promise<void> {
  const folder = dirname(path);
  try {
    await mkdir(folder, { recursive: true, mode: 0o750 });
  } catch (error) {
    throw listenFailure(key, path, (error as NodeJS.ErrnoException).code);
  }
  try {
    await checkFolders(folder, key);
  } catch (error) {
    throw isBrokerError(error) ? error : listenFailure(key, path, (error as NodeJS.ErrnoException).code);
  }
  let stats;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new BrokerError(
      'SOCKET_PATH_INVALID',
      `${key}: cannot inspect ${path}: ${(error as NodeJS.ErrnoException).code}`,
    );
  }
  if (!stats.isSocket()) {
    throw new BrokerError(
      'SOCKET_PATH_INVALID',
      `${key}: ${path} exists and is not a socket; refusing to replace it`,
    );
  }
  const answer = await probeSocket(path);
  if (answer === 'live') {
    throw new BrokerError(
      'SOCKET_IN_USE',
      `${key}: another process is serving ${path}; stop it first or choose another socket path`,
    );
  }
  if (answer === 'stale') await unlink(path).catch(() => undefined);
}

/**
 * The socket's folder and every folder above it (symlinks resolved) must be owned by root
 * or the broker's user. The socket's own folder must not be writable by every user, even
 * with the sticky bit: a sticky folder stops others from replacing a socket that exists,
 * not from creating theirs while the broker restarts. Above it, the sticky bit suffices
 * (others cannot rename a folder they do not own), which allows a folder under /tmp.
 * Group-writable folders pass: the group is the operator's choice (e.g. shared with the
 * apiserver).
 */
async function checkFolders(folder: string, key: string): Promise<void> {
  const uid = process.getuid?.();
  let at = await realpath(folder);
  for (let own = true; ; own = false) {
    const { mode, uid: owner } = await stat(at);
    const risk = `, so another user could replace the socket; run`;
    const instead = `or choose another ${key}`;
    if (owner !== 0 && owner !== uid) {
      throw new BrokerError(
        'SOCKET_PATH_INVALID',
        `${key}: the folder ${at} is owned by uid ${owner}, neither root nor the broker's user (uid ${uid ?? '?'})${risk} chown ${uid ?? 0} ${at}, ${instead}`,
      );
    }
    if ((mode & 0o002) !== 0 && (own || (mode & 0o1000) === 0)) {
      const octal = (mode & 0o7777).toString(8).padStart(4, '0');
      throw new BrokerError(
        'SOCKET_PATH_INVALID',
        `${key}: the folder ${at} is writable by every user (mode ${octal})${risk} chmod o-w ${at}, ${instead}`,
      );
    }
    const parent = dirname(at);
    if (parent === at) return;
    at = parent;
  }
}

const NOT_ALLOWED =
  "the broker's user may not listen there (a folder it cannot write to, or a port below 1024); give it the folder, or choose another path or a port above 1023";

/** What each errno means for a listener, and what to do about it. */
const listenFixes: Readonly<Record<string, string>> = {
  ENOENT: 'a folder on the path does not exist and cannot be created; create it',
  ENOTDIR: 'a part of the path is a file, not a folder; correct the path',
  // mkdir's answer where a folder of the path is a file.
  EEXIST: 'a part of the path is a file, not a folder; correct the path',
  EACCES: NOT_ALLOWED,
  EPERM: NOT_ALLOWED,
  EROFS: 'the filesystem is read-only; put it on a writable one, e.g. under /run',
  EADDRNOTAVAIL: 'the address is not one of this host; use one of its addresses, or 127.0.0.1',
};

/**
 * A listener that could not open, as the error to stop start-up with. An address in use
 * is SOCKET_IN_USE: the process holding it may be a broker still draining, so a restart
 * later may succeed. Everything else needs the path, the folder or the config fixed.
 */
export function listenFailure(key: string, address: string, errno: string | undefined): BrokerError {
  const cause = errno ?? 'error';
  if (cause === 'EADDRINUSE') {
    return new BrokerError(
      'SOCKET_IN_USE',
      `${key}: ${address} is in use by another process (EADDRINUSE); stop it, or choose another ${key}`,
      cause,
    );
  }
  const fix =
    listenFixes[cause] ??
    'check the path and its filesystem: unix sockets need a local one (not NFS, not most FUSE mounts)';
  return new BrokerError(
    'SOCKET_PATH_INVALID',
    `${key}: cannot listen on ${address} (${cause}); ${fix}`,
    cause,
  );
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
