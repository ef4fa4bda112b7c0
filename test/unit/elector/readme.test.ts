/**
 * The README's elector configuration table says what the parser does: every `ELECTOR_*`
 * row matches {@link OPTIONS} (flag, environment, default, meaning), and nothing is missing.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { OPTIONS, optionsTable } from '../../../elector/config.ts';

const README = path.resolve(import.meta.dirname, '../../../README.md');

/** Table rows as trimmed cells, for rows whose second cell is an `ELECTOR_*` variable. */
function electorRows(markdown: string): string[][] {
  return markdown
    .split('\n')
    .filter((line) => line.trimStart().startsWith('|'))
    .map((line) =>
      line
        .trim()
        .replace(/^\||\|$/g, '')
        .split(/(?<!\\)\|/)
        .map((cell) => cell.trim().replace(/\s+/g, ' ')),
    )
    .filter((cells) => /^`ELECTOR_[A-Z_]+`$/.test(cells[1] ?? ''));
}

test('the generated table is what the README must carry', () => {
  const rows = electorRows(optionsTable());
  assert.equal(rows.length, OPTIONS.length);
});

const readme = readFileSync(README, 'utf8');
const rows = electorRows(readme);
test("README's elector configuration table matches the parser", () => {
  // No skip when the table is missing: a README without it fails (npm run docs writes it).
  assert.ok(rows.length > 0, 'README has no elector configuration table (run npm run docs)');
  assert.deepEqual(rows, electorRows(optionsTable()));
});
