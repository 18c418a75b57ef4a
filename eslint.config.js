// Lint gate for the test command: type-aware rules catch floating promises, which in a
// daemon become unhandled rejections at 3 a.m.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'test/conformance/bin/', '.demo/', '.cache/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['eslint.config.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      eqeqeq: 'error',
      'prefer-const': 'error',
      'no-var': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test runs describe/it itself; their promises are not ours to await.
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test'] },
          ],
        },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  // src/node-http.ts says why: an ES import of node:http loads undici (13 MB) into the broker.
  {
    files: ['src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'node:http',
              message:
                "Import { http } from src/node-http.ts: an ES import of node:http loads Node's undici.",
              allowTypeImports: true,
            },
          ],
        },
      ],
    },
  },
  // The console's browser script: its own tsconfig (DOM, checkJs) knows the browser's globals.
  { files: ['src/admin/console/*.js'], rules: { 'no-undef': 'off' } },
);
