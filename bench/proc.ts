// What /proc says about a process the run started, read the same way for the broker and
// the Go reference: resident memory now and at its peak, the peak's reset, CPU time used,
// and the resident memory it settles at when left alone.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { settle, type Settled } from './measures.ts';

/** Resident memory of a process now (VmRSS) and at its peak (VmHWM), in MB. */
export function residentMemory(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMb: Math.round(kb('VmRSS') / 1024), peakMb: Math.round(kb('VmHWM') / 1024) };
}

/** Resets VmHWM to the current RSS (Linux clear_refs 5), so the next peak is the storm's own. */
export function resetPeakMemory(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

let ticksPerSecond: number | undefined;

/** Clock ticks per second of /proc's CPU times (USER_HZ; 100 on every common kernel). */
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const answer = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    ticksPerSecond = Number.isFinite(answer) && answer > 0 ? answer : 100;
  }
  return ticksPerSecond;
}

/**
 * CPU time a process has used so far, user plus system, over all its threads (libuv's pool
 * and V8's helpers for Node.js, every goroutine's thread for Go), in ms. The resolution is one
 * clock tick (10 ms), so it is read around whole cases, never around single calls.
 */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 (utime, stime); fields[0] is field 3.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / clockTicks();
}

/** VmRSS once nothing has talked to the process for a while and two reads agree within 1 MB. */
export function idleResidentMemory(pid: number): Promise<Settled> {
  const rssMb = () => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
  };
  return settle(rssMb).then(result => ({ ...result, valueMb: Math.round(result.valueMb) }));
}
