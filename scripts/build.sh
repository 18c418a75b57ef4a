#!/usr/bin/env bash
# `npm run build`: bundles src/ into dist/ (JavaScript with source maps) and copies the files the
# code reads beside itself at run time, so that production runs plain JavaScript: no type
# stripping at start (about 20 MB of RSS and seconds of start-up on a busy machine), and one
# bundle instead of ~1,000 module files (about 6 MB less idle RSS; see
# docs/performance.md#memory). proto/ and package.json are read from the project root, which
# dist/ sits in as src/ does, so they need no copy.
#
# dist/.built is written last: bin/kms-broker runs dist/ only when that stamp is newer than
# every file of src/ and this build's config, so an interrupted or stale build is never run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The stamp takes the time the build started: a file saved during it counts as newer.
started=$(mktemp)
trap 'rm -f "$started"' EXIT
rm -rf dist
# On the project's Node.js 24 where it is installed (not the machine's node).
node=node_modules/node/bin/node
[ -x "$node" ] || node=node
# Type errors stop the build (esbuild below strips types without checking them).
"$node" node_modules/typescript/bin/tsc -p tsconfig.build.json
"$node" --input-type=module - <<'JS'
// esbuild bundles the CLI and what it imports into dist/cli/: main.js, one chunk per lazily
// imported part (each command, each backend kind, the admin API) and the chunks they share;
// and the PKCS#11 crypto thread's script, which runs in a worker of its own.
// Whitespace and syntax are minified (the source text V8 keeps of every loaded module is
// RSS); names are kept, so a stack trace stays readable without the source maps.
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, relative } from 'node:path';

const root = process.cwd();
// Our modules find proto/, package.json and the console's files relative to their own
// location (`new URL('../../proto/x', import.meta.url)`). In the bundle they live in a chunk
// of dist/cli/, so each one's import.meta.url is rewritten to the file it was compiled from
// would have had in dist/ (dist/grpc/proto.js), relative to the chunk: the paths resolve as
// before, wherever dist/ is installed.
// CommonJS packages that read files beside themselves (__dirname) get theirs the same way,
// relative to the chunk, pointing back into node_modules.
const keepLocations = {
  name: 'keep-locations',
  setup(esbuild) {
    esbuild.onLoad({ filter: /\/src\/.*\.ts$/ }, async ({ path }) => {
      const text = await readFile(path, 'utf8');
      const compiled = '../' + relative(`${root}/src`, path).replace(/\.ts$/, '.js');
      const url = `new URL(${JSON.stringify(compiled)}, import.meta.url).href`;
      return { contents: text.replaceAll('import.meta.url', url), loader: 'ts' };
    });
    esbuild.onLoad({ filter: /\/node_modules\/.*\.c?js$/ }, async ({ path }) => {
      const text = await readFile(path, 'utf8');
      if (!/\b__(dirname|filename)\b/.test(text) || /\bimport\.meta\b/.test(text)) return undefined;
      const fromDist = '../../' + relative(root, path);
      const here = `__kbLocation(${JSON.stringify(dirname(fromDist))})`;
      const file = `__kbLocation(${JSON.stringify(fromDist)})`;
      return { contents: `var __dirname = ${here}, __filename = ${file};\n${text}`, loader: 'js' };
    });
  },
};

// `await import('yaml')` of a CommonJS package: Node gives its exports as named exports, an
// esbuild chunk only as `default`. Such imports go through a module that names them.
// The GCP backend hands grpc-js credentials to google-gax, which loads grpc-js from
// node_modules: its own import of grpc-js loads that copy too, not the bundle's.
const namedExports = {
  name: 'named-exports',
  setup(esbuild) {
    const requireHere = createRequire(`${root}/package.json`);
    const isExternal = path => external.some(name => path === name || path.startsWith(name.replace('*', '')));
    esbuild.onResolve({ filter: /^[^./]/ }, ({ path, kind }) => {
      if (kind !== 'dynamic-import' || isExternal(path)) return undefined;
      if (path === '@grpc/grpc-js') return { path, external: true };
      return { path, namespace: 'named-exports' };
    });
    esbuild.onLoad({ filter: /.*/, namespace: 'named-exports' }, ({ path }) => {
      const names = Object.keys(requireHere(path)).filter(name => /^[A-Za-z_$][\w$]*$/.test(name) && name !== 'default');
      const contents = `import * as ns from ${JSON.stringify(path)};\nexport default ns.default;\nexport const { ${names.join(', ')} } = ns;\n`;
      return { contents, loader: 'js', resolveDir: root };
    });
  },
};

// Native code (pkcs11js), and the SDKs of backends a config may not name: each loads from
// node_modules only when its backend kind is configured, as before.
const external = [
  'pkcs11js',
  'undici',
  'node-vault',
  '@aws-sdk/*',
  '@google-cloud/*',
  'google-gax',
  '@azure/*',
  '@alicloud/*',
  '@kubernetes/client-node',
];

await build({
  entryPoints: {
    'cli/main': 'src/cli/main.ts',
    // A PKCS#11 crypto thread's script, loaded by path (crypto-threads.ts) where the module
    // it sat beside would have been: dist/backends/pkcs11/threads/.
    'backends/pkcs11/threads/crypto-worker': 'src/backends/pkcs11/threads/crypto-worker.ts',
  },
  outdir: 'dist',
  chunkNames: 'cli/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  // A checkout whose node_modules links to another clone's still names its own paths.
  preserveSymlinks: true,
  sourcemap: true,
  sourcesContent: false,
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  external,
  // CommonJS code in an ES module bundle: require() for the externals and for what packages
  // load by name at run time (protobufjs finds `long` so), and the location helper above.
  banner: {
    js: [
      "import { createRequire as __kbRequire } from 'node:module';",
      "import { fileURLToPath as __kbPath } from 'node:url';",
      'const require = __kbRequire(import.meta.url);',
      'const __kbLocation = p => __kbPath(new URL(p, import.meta.url));',
    ].join(' '),
  },
  plugins: [keepLocations, namedExports],
});
JS
# The web console's static files (src/admin/console/routes.ts reads them from its folder).
# Its tsconfig only type-checks the browser script; it is not an asset.
(cd src && find . -type f ! -name '*.ts' ! -name tsconfig.json -exec cp --parents {} ../dist/ \;)
touch -r "$started" dist/.built
echo "build: dist/ from src/ ($(find dist -name '*.js' -path 'dist/cli/*' | wc -l) bundle files)"
