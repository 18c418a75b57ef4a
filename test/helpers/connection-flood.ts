// Run as its own process by test/integration/connection-flood.test.ts, as a hostile local
// user would: opens connections that never send a byte, to the admin TCP listener and to the
// KMS unix socket, and reports on stdout (one JSON line per change) how many of each the
// broker still holds open, and whether every connection attempt has been answered.
//   node connection-flood.ts ADMIN_HOST ADMIN_PORT KMS_SOCKET ADMIN_COUNT KMS_COUNT
import { connect, type Socket } from 'node:net';

export interface FloodReport {
  readonly admin: number;
  readonly kms: number;
  /** Every connection attempt has connected or failed. */
  readonly settled: boolean;
}

const [adminHost = '', adminPort = '', kmsSocket = '', adminCount = '0', kmsCount = '0'] =
  process.argv.slice(2);
const open = { admin: 0, kms: 0 };
const total = Number(adminCount) + Number(kmsCount);
let attempted = 0;
let reportQueued = false;

function report(): void {
  if (reportQueued) return;
  reportQueued = true;
  setImmediate(() => {
    reportQueued = false;
    const line: FloodReport = { ...open, settled: attempted === total };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  });
}

function flood(kind: keyof typeof open, count: number, dial: () => Socket): void {
  for (let index = 0; index < count; index++) {
    const socket = dial();
    let connected = false;
    socket.on('connect', () => {
      connected = true;
      attempted++;
      open[kind]++;
      report();
    });
    // Whatever the broker sends (a 408 when it gives up on the request) is read and dropped.
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (connected) open[kind]--;
      else attempted++;
      report();
    });
  }
}

flood('admin', Number(adminCount), () => connect({ host: adminHost, port: Number(adminPort) }));
flood('kms', Number(kmsCount), () => connect({ path: kmsSocket }));
