// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.cluster/', 'coverage/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Nothing floats: every promise is awaited, returned or explicitly voided.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test's describe/test return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'test', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // The pure core must not reach for the outside world (see README "Layout").
    files: [
      'elector/election.ts',
      'elector/store.ts',
      'elector/decisions.ts',
      'elector/reflector.ts',
      'elector/campaign.ts',
      'elector/leader.ts',
      'elector/config.ts',
      'webhook/inject.ts',
      'webhook/admission.ts',
      'webhook/patch.ts',
      'webhook/config.ts',
      'webhook/certs.ts',
    ],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            'fastify',
            'pino',
            'node:fs',
            'node:http',
            'node:https',
            '@kubernetes/client-node',
            'fs',
            'http',
          ].map((name) => ({
            name,
            allowTypeImports: true,
            message: 'The pure core takes values in and returns values; do I/O in an adapter.',
          })),
        },
      ],
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'env', message: 'Only main.ts reads the environment.' },
        { object: 'Date', property: 'now', message: 'Take the time from an injected clock.' },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
