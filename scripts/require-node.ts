/**
 * The project's scripts run on Node.js 24: the `node` devDependency ships it, and `npm run`
 * puts it first on PATH. Imported first by the scripts a person starts, so another Node.js
 * (22 strips types too) stops with what to do instead of failing somewhere later.
 */
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `lifelease's scripts run on Node.js 24, and this is Node.js ${process.version}. ` +
      'Run them through npm (`npm ci` once, then `npm run demo`, `npm test`, ...), which uses the ' +
      'Node.js 24 that the `node` devDependency installs in node_modules/.bin.',
  );
  process.exit(1);
}
export {};
