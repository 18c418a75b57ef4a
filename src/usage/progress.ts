// How far a scan is, on stderr (stdout is the report's): a progress bar on a terminal, plain
// lines otherwise (a log, a CI job, a pipe), one per tenth of the way or per 5 s at most.
import cliProgress from 'cli-progress';
import type { Progress } from './paged-read.ts';

export interface ProgressView {
  update(progress: Progress): void;
  /** Ends the bar (or writes the last line); safe to call more than once. */
  stop(): void;
}

const LINE_INTERVAL_MS = 5000;

export function progressView(stream: NodeJS.WriteStream, now: () => number = Date.now): ProgressView {
  return stream.isTTY === true ? barView(stream) : lineView(stream, now);
}

function barView(stream: NodeJS.WriteStream): ProgressView {
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format:
        'scanning etcd |{bar}| {percentage}% {value}/{total} values, revision {revision}, ETA {eta_formatted}',
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let stopped = false;
  return {
    update({ read, total, revision }) {
      if (!started) {
        bar.start(total, read, { revision });
        started = true;
      } else bar.update(read, { revision });
      bar.setTotal(total);
    },
    stop() {
      if (started && !stopped) bar.stop();
      stopped = true;
    },
  };
}

function lineView(stream: NodeJS.WriteStream, now: () => number): ProgressView {
  let lastStep = -1;
  let lastAt = Number.NEGATIVE_INFINITY;
  let last: Progress | undefined;
  let printed: Progress | undefined;
  const print = (progress: Progress) => {
    const percent = progress.total === 0 ? 100 : Math.floor((progress.read / progress.total) * 100);
    stream.write(
      `scanning etcd: ${progress.read}/${progress.total} values (${percent}%), revision ${progress.revision}\n`,
    );
    printed = progress;
  };
  return {
    update(progress) {
      last = progress;
      const step = progress.total === 0 ? 10 : Math.floor((progress.read / progress.total) * 10);
      if (step > lastStep || now() - lastAt >= LINE_INTERVAL_MS) {
        lastStep = step;
        lastAt = now();
        print(progress);
      }
    },
    stop() {
      if (last !== undefined && last !== printed) print(last);
    },
  };
}
