// bin/kms-broker runs the compiled dist/ only while it is current, so that a checkout edited
// or pulled after its build never runs the stale build; and the build in this checkout, when
// current, holds everything src/ ships as one bundle (tests that start brokers run it).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';

const root = new URL('../../', import.meta.url).pathname;

/** A project root with the real launcher and runtime, and a main of each kind that says which it is. */
function fakeRoot(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kms-broker-bin-'));
  mkdirSync(join(dir, 'bin'));
  copyFileSync(join(root, 'bin/kms-broker'), join(dir, 'bin/kms-broker'));
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  for (const [file, says] of [
    ['src/cli/main.ts', 'src'],
    ['dist/cli/main.js', 'dist'],
  ] as const) {
    mkdirSync(join(dir, file, '..'), { recursive: true });
    writeFileSync(
      join(dir, file),
      `process.stdout.write([${JSON.stringify(says)}, ...process.execArgv].join(' '));\n`,
    );
  }
  writeFileSync(join(dir, 'tsconfig.json'), '{}\n');
  writeFileSync(join(dir, 'tsconfig.build.json'), '{}\n');
  return dir;
}

/** Sets a file's modification time, in seconds since the epoch: no waiting for the clock. */
function at(path: string, seconds: number): void {
  utimesSync(path, seconds, seconds);
}

function ran(dir: string, args = ['--version'], env: NodeJS.ProcessEnv = {}): string {
  const result = spawnSync(join(dir, 'bin/kms-broker'), args, {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, NODE_DISABLE_COMPILE_CACHE: '1', ...env },
  });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
}

describe('bin/kms-broker', () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(dir => rmSync(dir, { recursive: true, force: true })));
  const setUp = () => {
    const dir = fakeRoot();
    dirs.push(dir);
    for (const file of ['src/cli/main.ts', 'tsconfig.json', 'tsconfig.build.json'])
      at(join(dir, file), 1_000);
    return dir;
  };

  it('runs the sources when the build has no stamp (never built, or interrupted)', () => {
    assert.equal(ran(setUp()), 'src');
  });

  it('runs the build when its stamp is newer than every source', () => {
    const dir = setUp();
    writeFileSync(join(dir, 'dist/.built'), '');
    at(join(dir, 'dist/.built'), 2_000);
    assert.equal(ran(dir), 'dist');
  });

  for (const file of ['src/cli/main.ts', 'tsconfig.json', 'tsconfig.build.json']) {
    it(`runs the sources, not the stale build, once ${file} is newer than the build`, () => {
      const dir = setUp();
      writeFileSync(join(dir, 'dist/.built'), '');
      at(join(dir, 'dist/.built'), 2_000);
      at(join(dir, file), 3_000);
      assert.equal(ran(dir), 'src');
    });
  }

  it('runs the build where the sources are not shipped (the image)', () => {
    const dir = setUp();
    writeFileSync(join(dir, 'dist/.built'), '');
    rmSync(join(dir, 'src'), { recursive: true });
    assert.equal(ran(dir), 'dist');
  });

  it("caps V8's young generation for serve only, unless NODE_OPTIONS sets it", () => {
    const dir = setUp();
    assert.equal(ran(dir, ['serve']), 'src --max-semi-space-size=4');
    assert.equal(ran(dir, ['status']), 'src');
    assert.equal(ran(dir, ['serve'], { NODE_OPTIONS: '--max-semi-space-size=8' }), 'src');
  });
});

/** Every file under a folder, relative to it. */
function filesUnder(folder: string): string[] {
  return readdirSync(folder, { recursive: true, encoding: 'utf8' }).filter(file =>
    statSync(join(folder, file)).isFile(),
  );
}

describe('the build in this checkout', () => {
  const stamp = join(root, 'dist/.built');
  const current =
    existsSync(stamp) &&
    filesUnder(join(root, 'src')).every(
      file => statSync(join(root, 'src', file)).mtimeMs <= statSync(stamp).mtimeMs,
    );

  it(
    'is one bundle with source maps that point at the sources, and every asset src/ reads beside itself',
    { skip: current ? false : 'no current build (npm run build)' },
    () => {
      const dist = filesUnder(join(root, 'dist'));
      const scripts = dist.filter(file => file.endsWith('.js') && file.startsWith('cli/'));
      assert.ok(scripts.includes('cli/main.js'), 'dist/cli/main.js, what bin/kms-broker runs');
      for (const script of scripts) {
        const map = JSON.parse(readFileSync(join(root, 'dist', `${script}.map`), 'utf8')) as {
          sources: string[];
        };
        const ours = map.sources.filter(source => source.startsWith('../../src/'));
        for (const source of ours)
          assert.ok(
            existsSync(join(root, 'dist/cli', source)),
            `${script}.map names ${source}, which exists`,
          );
      }
      // The locations build.sh gives packages that read files beside themselves (__dirname).
      for (const script of scripts) {
        const text = readFileSync(join(root, 'dist', script), 'utf8');
        for (const [, location] of text.matchAll(/__kbLocation\("([^"]+)"\)/g))
          assert.ok(existsSync(join(root, 'dist/cli', location!)), `${script}: ${location} exists`);
      }
      const assets = filesUnder(join(root, 'src')).filter(
        file => !file.endsWith('.ts') && !file.endsWith('tsconfig.json'),
      );
      assert.deepEqual(
        assets.filter(file => !dist.includes(file)),
        [],
        `assets missing from ${relative(process.cwd(), join(root, 'dist'))}`,
      );
    },
  );

  it(
    'finds proto/ and package.json from inside the bundle, as the modules did from src/',
    { skip: current ? false : 'no current build (npm run build)' },
    () => {
      const node = join(root, 'node_modules/node/bin/node');
      const version = spawnSync(node, [join(root, 'dist/cli/main.js'), '--version'], { encoding: 'utf8' });
      const { version: expected } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
        version: string;
      };
      assert.equal(version.stdout.trim(), expected);
      // Loads the KMS v2 service from proto/ through the module that does at serve.
      const proto = spawnSync(
        node,
        [
          '--input-type=module',
          '-e',
          `const main = ${JSON.stringify(join(root, 'dist/cli/main.js'))};` +
            `const { readdirSync } = await import('node:fs');` +
            `for (const f of readdirSync(new URL('.', 'file://' + main))) if (f.endsWith('.js')) {` +
            `const m = await import(new URL(f, 'file://' + main).href);` +
            `if (typeof m.loadService === 'function') { console.log(Object.keys(m.loadService('kms-v2.proto', 'v2.KeyManagementService')).sort().join(',')); break; } }`,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(proto.stdout.trim(), 'Decrypt,Encrypt,Status', proto.stderr);
    },
  );
});
