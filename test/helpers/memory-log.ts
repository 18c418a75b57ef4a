// A pino destination that keeps records in memory, so tests can assert on logs.
import { Writable } from 'node:stream';

export interface MemoryLog {
  readonly stream: Writable;
  records(): Record<string, unknown>[];
  text(): string;
}

export function memoryLog(): MemoryLog {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter(line => line !== ''),
      );
      callback();
    },
  });
  return {
    stream,
    records: () => lines.map(line => JSON.parse(line) as Record<string, unknown>),
    text: () => lines.join('\n'),
  };
}
