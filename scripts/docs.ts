/**
 * `npm run docs`: rewrites the generated parts of README.md (the configuration tables),
 * from the parsers that own the defaults. `test/unit/docs/readme.test.ts` fails when the README
 * differs from what this would write.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { optionsTable as electorTable } from '../elector/config.ts';
import { optionsTable as webhookTable } from '../webhook/config.ts';

export const README = path.resolve(import.meta.dirname, '../README.md');

export const GENERATED: Record<string, () => string> = {
  'elector-options': electorTable,
  'webhook-options': webhookTable,
};

/** README text with every `<!-- BEGIN x -->...<!-- END x -->` block regenerated. */
export function render(readme: string): string {
  let out = readme;
  for (const [name, make] of Object.entries(GENERATED)) {
    const re = new RegExp(`(<!-- BEGIN ${name} -->\\n)[\\s\\S]*?(<!-- END ${name} -->)`);
    if (!re.test(out))
      throw new Error(`README.md has no <!-- BEGIN ${name} --> ... <!-- END ${name} --> block`);
    out = out.replace(re, (_m, begin: string, end: string) => `${begin}${make()}\n${end}`);
  }
  return out;
}

if (import.meta.main) {
  writeFileSync(README, render(readFileSync(README, 'utf8')));
  console.log('README.md tables regenerated');
}
