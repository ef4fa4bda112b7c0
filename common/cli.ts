/**
 * The image's entrypoint: `cli.js <command> [flags]`, where command is `elector` or
 * `webhook`. One image carries both, so an injected elector always matches the webhook
 * that injected it. Each command is also a standalone bundle (`node dist/elector.js`).
 */
const commands: Record<string, string> = { elector: './elector.js', webhook: './webhook.js' };

const usage = `usage: cli.js <${Object.keys(commands).join('|')}> [flags]`;
const name = process.argv[2];
if (name === undefined || name === '--help' || name === '-h') {
  console.log(usage);
  process.exit(name === undefined ? 2 : 0);
}
const target = commands[name];
if (target === undefined) {
  console.error(`${usage}\nunknown command ${JSON.stringify(name)}`);
  process.exit(2);
}
// The command parses process.argv.slice(2) as its own flags.
process.argv.splice(2, 1);
await import(target);
