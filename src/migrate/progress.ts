// How far each resource has got: a bar per resource on a terminal (cli-progress), plain lines
// elsewhere (logs, CI), nothing with --json. Always on stderr, so stdout holds only the result.

export interface Progress {
  /** A resource starts; total may be unknown (0) until the first page or status. */
  begin(resource: string, total: number): void;
  update(resource: string, done: number, total: number): void;
  end(resource: string, summary: string): void;
  /** A line that is not about one resource (waiting for the apiservers, a resumed run). */
  note(line: string): void;
  stop(): void;
}

export const silentProgress: Progress = {
  begin: () => undefined,
  update: () => undefined,
  end: () => undefined,
  note: () => undefined,
  stop: () => undefined,
};

/** Plain lines: one at the start and end of a resource, and one at most every `everyMs` between. */
export function lineProgress(
  write: (line: string) => void,
  everyMs = 5000,
  now: () => number = Date.now,
): Progress {
  const last = new Map<string, number>();
  return {
    begin(resource, total) {
      last.set(resource, now());
      write(`${resource}: started${total > 0 ? `, about ${total} objects` : ''}`);
    },
    update(resource, done, total) {
      if (now() - (last.get(resource) ?? 0) < everyMs) return;
      last.set(resource, now());
      write(`${resource}: ${done}/${total} objects`);
    },
    end: (resource, summary) => write(`${resource}: ${summary}`),
    note: write,
    stop: () => undefined,
  };
}

/** A cli-progress bar per resource (loaded only on a terminal). */
export async function barProgress(stream: NodeJS.WriteStream): Promise<Progress> {
  const { MultiBar, Presets } = (await import('cli-progress')).default;
  const bars = new MultiBar(
    {
      stream,
      format: '{resource} [{bar}] {value}/{total} {percentage}% | {eta_formatted} left',
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  const byResource = new Map<string, ReturnType<typeof bars.create>>();
  return {
    begin(resource, total) {
      byResource.set(resource, bars.create(Math.max(total, 1), 0, { resource }));
    },
    update(resource, done, total) {
      const bar = byResource.get(resource);
      if (bar === undefined) return;
      if (total > 0) bar.setTotal(total);
      bar.update(done, { resource });
    },
    end(resource, summary) {
      const bar = byResource.get(resource);
      if (bar !== undefined) bar.update(bar.getTotal(), { resource });
      bars.log(`${resource}: ${summary}\n`);
    },
    note: line => bars.log(`${line}\n`),
    stop: () => bars.stop(),
  };
}
