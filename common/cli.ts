/**
 * The image's entrypoint: `cli.js <command> [flags]`, where command is `elector` or
 * `webhook`. One image carries both, so an injected elector always matches the webhook
 * that injected it. Each command is also a standalone bundle (`node dist/elector.js`).
 *
 * A command module exports `runProcess(argv)`: it runs the command for this process (its
 * streams, environment and signals) with the flags it is given and exits with the command's
 * code. Not bundled (it loads the bundles), so it imports nothing but them.
 */
interface CommandModule {
  runProcess?: (argv: readonly string[]) => Promise<never>;
}

const commands: Record<string, string> = { elector: './elector.js', webhook: './webhook.js' };

const usage = `usage: cli.js <${Object.keys(commands).join('|')}> [flags]`;
const [name, ...flags] = process.argv.slice(2);
if (name === undefined || name === '--help' || name === '-h') {
  console.log(usage);
  process.exit(name === undefined ? 2 : 0);
}
const target = commands[name];
if (target === undefined) {
  console.error(`${usage}\nunknown command ${JSON.stringify(name)}`);
  process.exit(2);
}
const command = (await import(target)) as CommandModule;
if (!command.runProcess) throw new Error(`${target} exports no runProcess`);
await command.runProcess(flags);
