/** The flag machinery shared by the elector and the webhook. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { optionsTable, readFlags, settingsReader, type OptionSpec } from '../../../common/flags.ts';

const OPTIONS: OptionSpec<'name' | 'verbose' | 'pipe'>[] = [
  { key: 'name', flag: '--name', env: 'X_NAME', default: 'n', description: 'a name' },
  {
    key: 'verbose',
    flag: '--verbose',
    env: 'X_VERBOSE',
    default: 'false',
    boolean: true,
    description: 'loud',
  },
  { key: 'pipe', flag: '--pipe', env: 'X_PIPE', default: '', defaultText: '(none)', description: 'a | b' },
];

describe('flags', () => {
  test('--flag=value, --flag value, boolean flags, and every problem at once', () => {
    const problems: string[] = [];
    const { values } = readFlags(
      ['--name', 'a', '--verbose', '--pipe', '--bogus', 'stray'],
      OPTIONS,
      problems,
    );
    assert.deepEqual(Object.fromEntries(values), { name: 'a', verbose: 'true' });
    assert.deepEqual(problems, [
      'flag --pipe needs a value',
      'unknown flag --bogus',
      'unexpected argument "stray"',
    ]);
  });

  test("Go's single dash only when asked", () => {
    const strict: string[] = [];
    readFlags(['-name=a'], OPTIONS, strict);
    assert.deepEqual(strict, ['unknown flag -name']);
    const go: string[] = [];
    assert.equal(readFlags(['-name=a'], OPTIONS, go, { singleDash: true }).values.get('name'), 'a');
    assert.deepEqual(go, []);
  });

  test('flag, then environment, then default; an empty variable is a value unless told otherwise', () => {
    const { values } = readFlags(['--name=flag'], OPTIONS, []);
    const env = { X_NAME: 'env', X_VERBOSE: ' ', X_PIPE: 'p' };
    const { raw, nameOf } = settingsReader(OPTIONS, values, env);
    assert.equal(raw('name'), 'flag');
    assert.equal(raw('verbose'), '');
    assert.equal(raw('pipe'), 'p');
    assert.equal(nameOf('pipe'), '--pipe (X_PIPE)');
    assert.equal(settingsReader(OPTIONS, values, env, { emptyEnvIsUnset: true }).raw('verbose'), 'false');
  });

  test('the README table escapes pipes and shows defaults', () => {
    const rows = optionsTable(OPTIONS).split('\n');
    assert.equal(rows.length, 2 + OPTIONS.length);
    assert.equal(rows[2], '| `--name` | `X_NAME` | `n` | a name |');
    assert.equal(rows[4], '| `--pipe` | `X_PIPE` | (none) | a \\| b |');
  });
});
