// The state file: atomic writes with tight permissions, a missing file as "no state yet",
// a corrupt file as STATE_CORRUPT (never overwritten, also when damaged while the store
// runs), writes through a symlink to its target, and change notification by polling.
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileStateStore } from '../../src/broker/state/file-state-store.ts';
import { parseState, type BrokerState } from '../../src/broker/state/state-schema.ts';
import { brokerError } from './expect-error.ts';

const state: BrokerState = {
  format: 1,
  generation: 2,
  backends: {
    hsm: {
      writeVersion: '2',
      versions: [
        { version: '1', fingerprint: 'pkcs11:s:01', createdAt: '2025-01-01T00:00:00.000Z', state: 'retired' },
        { version: '2', fingerprint: 'pkcs11:s:02', createdAt: '2025-02-01T00:00:00.000Z', state: 'active' },
      ],
    },
  },
};

const WATCH_INTERVAL_MS = 10;
const WATCH_TIMEOUT_MS = 5000;

/** Resolves on the first call of the returned callback; rejects after a bound. */
function firstCall(what: string): { callback: () => void; called: Promise<void> } {
  let resolve: () => void = () => undefined;
  const called = new Promise<void>((onCall, onTimeout) => {
    // A ref'd timer: it also keeps the process alive, as the state watcher does not.
    const timer = setTimeout(
      () => onTimeout(new Error(`${what}: not called within ${WATCH_TIMEOUT_MS} ms`)),
      WATCH_TIMEOUT_MS,
    );
    resolve = () => {
      clearTimeout(timer);
      onCall();
    };
  });
  return {
    callback: () => resolve(),
    called,
  };
}

describe('state store', () => {
  let root: string;
  let folders = 0;
  /** A fresh (not yet existing) folder per test, so one test's files never meet another's. */
  const folder = () => join(root, `case-${folders++}`);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kmsb-state-'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('loads what it saved', async () => {
    const store = fileStateStore(join(folder(), 'state.json'));
    await store.save(state);
    assert.deepEqual(await store.load(), state);
  });

  it('creates the folder (mode 0700) and writes the file with mode 0600', async () => {
    const dir = folder();
    const path = join(dir, 'nested', 'state.json');
    await fileStateStore(path).save(state);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'nested'))).mode & 0o777, 0o700);
  });

  it('leaves no temporary files behind, also when replacing a file', async () => {
    const dir = folder();
    const store = fileStateStore(join(dir, 'state.json'));
    await store.save(state);
    await store.save({ ...state, generation: 3 });
    assert.deepEqual(await readdir(dir), ['state.json']);
    assert.equal((await store.load())?.generation, 3);
  });

  it('returns undefined for a missing file', async () => {
    assert.equal(await fileStateStore(join(folder(), 'state.json')).load(), undefined);
  });

  it('rejects a file that is not JSON with STATE_CORRUPT and leaves it untouched', async () => {
    const dir = folder();
    const path = join(dir, 'state.json');
    await fileStateStore(path).save(state);
    const garbage = '{"format": 1, "generation": 0, "backends": {';
    await writeFile(path, garbage);
    await assert.rejects(fileStateStore(path).load(), brokerError('STATE_CORRUPT', 'is not valid JSON'));
    assert.equal(await readFile(path, 'utf8'), garbage);
    assert.deepEqual(await readdir(dir), ['state.json']);
  });

  it('reports an unreadable path (a folder) as STATE_CORRUPT, not as missing', async () => {
    const dir = folder();
    await fileStateStore(join(dir, 'state.json')).save(state);
    await assert.rejects(fileStateStore(dir).load(), brokerError('STATE_CORRUPT', 'EISDIR'));
  });

  it('writes through a symlinked path to its target, keeping the link, also a dangling one', async () => {
    const dir = folder();
    const data = join(dir, 'volume');
    await mkdir(data, { recursive: true });
    const link = join(dir, 'state.json');
    await symlink(join(data, 'state.json'), link);
    const store = fileStateStore(link);
    await store.save(state);
    await store.save({ ...state, generation: 3 });
    assert.ok((await lstat(link)).isSymbolicLink(), 'the link was replaced by a file');
    assert.equal((await fileStateStore(join(data, 'state.json')).load())?.generation, 3);
    // The temp file lives and is renamed in the target's folder, never beside the link.
    assert.deepEqual(await readdir(data), ['state.json']);
    assert.deepEqual(await readdir(dir), ['state.json', 'volume']);
    assert.equal((await fileStateStore(link).load())?.generation, 3);
  });

  it('never overwrites a file another writer damaged after its last write, and says how to fix it', async () => {
    const dir = folder();
    const path = join(dir, 'state.json');
    const store = fileStateStore(path);
    await store.save(state);
    const garbage = '{"format": 1, "generation": 0, "backends": {"hsm": ';
    await writeFile(path, garbage);
    await assert.rejects(
      store.save({ ...state, generation: 3 }),
      brokerError(
        'STATE_WRITE_FAILED',
        `state file ${path} was changed by another writer and no longer holds valid state; not overwriting it: restore it from a backup, or move it away`,
      ),
    );
    assert.equal(await readFile(path, 'utf8'), garbage);
    assert.deepEqual(await readdir(dir), ['state.json']);
    // A valid edit by another writer, and a file moved away, are written over as before.
    await writeFile(path, JSON.stringify({ ...state, generation: 7 }));
    await store.save({ ...state, generation: 8 });
    await rm(path);
    await store.save({ ...state, generation: 9 });
    assert.equal((await store.load())?.generation, 9);
  });

  it('names the path, the errno and the fix when it cannot write', async () => {
    const dir = folder();
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'file'), 'not a folder');
    const path = join(dir, 'file', 'state.json');
    await assert.rejects(
      fileStateStore(path).save(state),
      brokerError(
        'STATE_WRITE_FAILED',
        `cannot write state file ${path} (ENOTDIR); a part of the path is a file`,
      ),
    );
  });

  describe('rejects schema violations as STATE_CORRUPT naming the problem', () => {
    const hsm = state.backends.hsm as BrokerState['backends'][string];
    const cases: { name: string; value: unknown; problem: string }[] = [
      {
        name: 'an unknown top-level key',
        value: { ...state, extra: true },
        problem: 'is invalid: extra: unknown key',
      },
      {
        name: 'an unknown key in a version',
        value: { ...state, backends: { hsm: { ...hsm, versions: [{ ...hsm.versions[1], note: 'x' }] } } },
        problem: 'is invalid: backends.hsm.versions[0].note: unknown key',
      },
      {
        name: 'a wrong format number',
        value: { ...state, format: 2 },
        problem: 'is invalid: format: must be 1',
      },
      {
        name: 'a negative generation',
        value: { ...state, generation: -1 },
        problem: 'is invalid: generation: must be >= 0',
      },
      {
        name: 'a missing key',
        value: { format: 1, generation: 0 },
        problem: 'is invalid: backends: required key is missing',
      },
      {
        name: 'an unknown version state',
        value: {
          ...state,
          backends: { hsm: { ...hsm, versions: [{ ...hsm.versions[1], state: 'deleted' }] } },
        },
        problem: 'is invalid: backends.hsm.versions[0].state: must be one of "active", "retired"',
      },
      {
        name: 'a backend without versions',
        value: { ...state, backends: { hsm: { writeVersion: '1', versions: [] } } },
        problem: 'is invalid: backends.hsm.versions: must NOT have fewer than 1 items',
      },
      {
        name: 'a write version that is not among the versions',
        value: { ...state, backends: { hsm: { ...hsm, writeVersion: '3' } } },
        problem: 'backend hsm writes with version 3, which it does not list',
      },
      {
        name: 'a JSON value that is not an object',
        value: [],
        problem: 'is invalid: (root): must be object',
      },
    ];
    for (const { name, value, problem } of cases) {
      it(name, () => {
        assert.throws(
          () => parseState(JSON.stringify(value), '/s.json'),
          brokerError('STATE_CORRUPT', problem),
        );
        assert.throws(
          () => parseState(JSON.stringify(value), '/s.json'),
          brokerError('STATE_CORRUPT', '/s.json'),
        );
      });
    }
  });

  describe('watch', () => {
    it('calls back when another writer replaces the file', async () => {
      const path = join(folder(), 'state.json');
      await fileStateStore(path).save(state);
      const { callback, called } = firstCall('watch');
      const stop = fileStateStore(path).watch(callback, WATCH_INTERVAL_MS);
      try {
        await fileStateStore(path).save({ ...state, generation: 3 });
        await called;
      } finally {
        stop();
      }
    });

    it('stops calling back once the returned function is called', async () => {
      const path = join(folder(), 'state.json');
      const store = fileStateStore(path);
      await store.save(state);
      let stoppedCalls = 0;
      const observer = firstCall('observer');
      store.watch(() => stoppedCalls++, WATCH_INTERVAL_MS)();
      // The observer polls the same file; when it has seen the change, a watcher that was
      // still attached would have seen it too.
      const stopObserver = store.watch(observer.callback, WATCH_INTERVAL_MS);
      try {
        await fileStateStore(path).save({ ...state, generation: 3 });
        await observer.called;
        assert.equal(stoppedCalls, 0);
      } finally {
        stopObserver();
      }
    });

    it("never calls back for the store's own saves, only for the next write of another", async () => {
      const path = join(folder(), 'state.json');
      const store = fileStateStore(path);
      await store.save(state);
      const seen: number[] = [];
      const other = firstCall('another writer');
      const stop = store.watch(() => {
        seen.push(seen.length);
        other.callback();
      }, WATCH_INTERVAL_MS);
      // An observer on another store sees every write; once it has seen the store's own
      // save, the store's watcher has had the same chance to (wrongly) report it.
      const observer = firstCall('observer');
      const stopObserver = fileStateStore(path).watch(observer.callback, WATCH_INTERVAL_MS);
      try {
        await store.save({ ...state, generation: 3 });
        await observer.called;
        assert.deepEqual(seen, [], 'its own save was reported as a change');
        await fileStateStore(path).save({ ...state, generation: 4 });
        await other.called;
        assert.equal(seen.length, 1);
      } finally {
        stop();
        stopObserver();
      }
    });
  });
});
