/**
 * The image itself, built from the real Dockerfile by buildah with local stand-ins for its
 * base images (packages/harness/src/image.ts), checked by reading the OCI archive that containerd
 * imports: its name, its config, and the files its layers hold; then its entrypoint is run
 * from the unpacked layers, as user 65532, on a read-only root, with nothing of the host
 * visible. The first run builds the images (about 10 minutes cold; needs root, buildah and
 * debootstrap); later runs find them in the cache.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFileSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  DISTROLESS_BASE,
  dockerfileSources,
  ensureImages,
  NODE_BASE,
  projectImageName,
  projectInputs,
  readOciArchive,
  unpackLayers,
  type Images,
  type OciConfig,
  type OciIndex,
} from '@lifelease/harness/image';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../../..');

/** Runs a command inside an unpacked rootfs: own mount namespace, root bind-mounted read-only, chroot. */
function inRootfs(rootfs: string, user: string, env: string[], argv: string[]) {
  const script =
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift 1 && exec chroot --userspec="$0" "$@"';
  return run(
    'unshare',
    ['--mount', '--propagation', 'private', 'sh', '-c', script, user, rootfs, rootfs, ...argv],
    {
      env: Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
    },
  );
}

/** Paths a runtime image must not hold: npm, node_modules, a shell, sources and manifests. */
function forbidden(files: Map<string, string>): string[] {
  return [...files.keys()].filter(
    (f) =>
      /(^|\/)node_modules(\/|$)/.test(f) ||
      /\/(npm|npx|npm-cli\.js|corepack)$/.test(f) ||
      /\/(sh|bash|dash|ash|busybox)$/.test(f) ||
      /\.ts$|\/package(-lock)?\.json$/.test(f),
  );
}

describe('the image, built by buildah from the Dockerfile', () => {
  let images: Images;
  let work: string;
  before(async () => {
    images = await ensureImages({ log: (l) => console.error(`# [image] ${l}`) });
    work = await mkdtemp(path.join(tmpdir(), 'lifelease-image-test-'));
  });
  after(() => rm(work, { recursive: true, force: true }));

  test('the name is the one the manifests use', () => {
    assert.equal(projectImageName(), 'ghcr.io/lifelease/lifelease:0.1.0');
    assert.equal(images.project.name, projectImageName());
    assert.match(
      readFileSync(path.join(root, 'manifests/base/kustomization.yaml'), 'utf8'),
      /newName: ghcr\.io\/lifelease\/lifelease\n\s*newTag: 0\.1\.0/,
    );
    assert.match(images.app.name, /^localhost\/lifelease-test-app:[0-9a-f]{16}$/);
  });

  test("the stand-ins carry the names the Dockerfile's FROM lines resolve to", () => {
    const dockerfile = readFileSync(path.join(root, 'Dockerfile'), 'utf8');
    const args = Object.fromEntries(
      [...dockerfile.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]),
    );
    const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) =>
      m[1]!.replace(/\$\{(\w+)\}/g, (_, name: string) => args[name] ?? ''),
    );
    // Docker's normalisation of a short name: docker.io/library/<name>.
    const full = froms.map((f) => (f.split('/')[0]!.includes('.') ? f : `docker.io/library/${f}`));
    assert.deepEqual(full, [NODE_BASE, DISTROLESS_BASE]);
  });

  test('a user who is not root is told so before anything is built', async () => {
    const res = await run(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'scripts/build-image.ts'],
      {
        cwd: root,
        env: { ...process.env, HOME: '/nonexistent', LIFELEASE_IMAGE_CACHE: '/nonexistent/images' },
      },
    ).then(
      () => assert.fail('the build ran as nobody'),
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(res.code, 1);
    assert.match(res.stderr, /cannot build the container images: building the images needs root/);
  });

  test('the cache key covers every file the Dockerfile copies', () => {
    assert.deepEqual(dockerfileSources(), [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'common',
      'elector',
      'webhook',
      'scripts/build.ts',
    ]);
  });

  test('the inputs change with any copied file, and only with those', async () => {
    const copy = path.join(work, 'inputs');
    const { files } = await projectInputs();
    for (const f of [...files, 'README.md'])
      cpSync(path.join(root, f), path.join(copy, f), { recursive: true });
    const base = (await projectInputs(copy)).hashes;
    assert.deepEqual(base, (await projectInputs()).hashes);
    assert.ok(base.some((l) => l.startsWith('package-lock.json ')));
    assert.ok(base.some((l) => l.startsWith('elector/main.ts ')));
    appendFileSync(path.join(copy, 'README.md'), '\nnot in the image\n');
    assert.deepEqual((await projectInputs(copy)).hashes, base);
    for (const f of ['Dockerfile', 'common/constants.ts', 'webhook/main.ts', 'scripts/build.ts']) {
      const before = readFileSync(path.join(copy, f));
      appendFileSync(path.join(copy, f), '\n');
      assert.notDeepEqual((await projectInputs(copy)).hashes, base, f);
      writeFileSync(path.join(copy, f), before);
    }
    writeFileSync(path.join(copy, 'common/new-file.ts'), '');
    assert.notDeepEqual((await projectInputs(copy)).hashes, base, 'a new file');
  });

  test('a second call finds both archives in the cache and builds nothing', async () => {
    const again = await ensureImages({ log: () => {} });
    assert.deepEqual(again.timings, {});
    assert.deepEqual(again.project, images.project);
    assert.deepEqual(again.app, images.app);
  });

  describe('the project image', () => {
    let index: OciIndex;
    let config: OciConfig;
    let files: Map<string, string>;
    let rootfs: string;
    before(async () => {
      const oci = await readOciArchive(images.project.archive, path.join(work, 'project'));
      index = oci.index;
      config = oci.config;
      rootfs = path.join(work, 'project-rootfs');
      files = await unpackLayers(oci.manifest, oci.blob, rootfs);
    });

    test('is annotated so that containerd and buildah import it under its name', () => {
      const annotations = index.manifests[0]?.annotations ?? {};
      assert.equal(annotations['io.containerd.image.name'], images.project.name);
      assert.equal(annotations['org.opencontainers.image.ref.name'], images.project.name);
    });

    test('config: entrypoint runs the CLI with the image node, as 65532:65532, from /app', () => {
      assert.equal(config.os, 'linux');
      assert.equal(config.architecture, 'amd64');
      assert.deepEqual(config.config.Entrypoint, ['/nodejs/bin/node', '/app/dist/cli.js']);
      assert.deepEqual(config.config.Cmd, ['--help']);
      assert.equal(config.config.User, '65532:65532');
      assert.equal(config.config.WorkingDir, '/app');
      assert.ok(config.config.Env?.includes('NODE_ENV=production'));
      // The build base's CA trust stays in the build stage.
      assert.ok(
        !config.config.Env?.some((e) => e.startsWith('NODE_EXTRA_CA_CERTS=')),
        String(config.config.Env),
      );
      assert.deepEqual(Object.keys(config.config.ExposedPorts ?? {}).sort(), [
        '4040/tcp',
        '4041/tcp',
        '8443/tcp',
      ]);
      assert.equal(config.config.Labels?.['org.opencontainers.image.title'], 'lifelease');
    });

    test('layers: the bundles and node; no npm, no node_modules, no shell, no sources', () => {
      for (const f of [
        '/app/dist/cli.js',
        '/app/dist/elector.js',
        '/app/dist/webhook.js',
        '/nodejs/bin/node',
      ])
        assert.ok(files.has(f), `${f} is in the image`);
      const all = [...files.keys()];
      assert.deepEqual(forbidden(files), []);
      // Bundles are root's and not writable by the user the image runs as.
      for (const f of all.filter((f) => f.startsWith('/app/dist/')))
        assert.match(files.get(f)!, /^[-d]r[-w][-x]r-[-x]r-[-x] 0\/0 /, `${f}: ${files.get(f)}`);
      // The user exists, as distroless has it.
      assert.match(readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8'), /^nonroot:x:65532:65532:/m);
    });

    test('its entrypoint runs `elector --help` and `webhook --help` as 65532 on a read-only root', async () => {
      const user = config.config.User!;
      const env = config.config.Env ?? [];
      const elector = await inRootfs(rootfs, user, env, [...config.config.Entrypoint!, 'elector', '--help']);
      assert.match(elector.stdout, /^Usage: elector --election=<name>/m);
      const webhook = await inRootfs(rootfs, user, env, [...config.config.Entrypoint!, 'webhook', '--help']);
      assert.match(webhook.stdout, /^Usage: webhook /m);
      // CMD alone: the CLI's own usage.
      const cmd = await inRootfs(rootfs, user, env, [...config.config.Entrypoint!, ...config.config.Cmd!]);
      assert.match(cmd.stdout, /usage: cli\.js <elector\|webhook>/);
      // Each command loads all of its code and reports its configuration problems.
      for (const command of ['elector', 'webhook']) {
        const res = await inRootfs(rootfs, user, env, [
          ...config.config.Entrypoint!,
          command,
          '--no-such-flag',
        ]).then(
          () => assert.fail(`${command} accepted an unknown flag`),
          (err: { code: number; stderr: string; stdout: string }) => err,
        );
        assert.equal(res.code, 2, `${command}: ${res.stderr}${res.stdout}`);
        assert.match(res.stderr + res.stdout, /no-such-flag/);
      }
      // And it is really that user, and the root really is read-only.
      const probe = await inRootfs(rootfs, user, env, [
        '/nodejs/bin/node',
        '-e',
        "const fs=require('fs');let w='writable';try{fs.writeFileSync('/app/x','')}catch(e){w=e.code}console.log(process.getuid(),process.getgid(),w)",
      ]);
      assert.equal(probe.stdout.trim(), '65532 65532 EROFS');
    });
  });

  describe('the test app image', () => {
    let config: OciConfig;
    let appFiles: Map<string, string>;
    let rootfs: string;
    before(async () => {
      const oci = await readOciArchive(images.app.archive, path.join(work, 'app'));
      assert.equal(oci.index.manifests[0]?.annotations?.['io.containerd.image.name'], images.app.name);
      config = oci.config;
      rootfs = path.join(work, 'app-rootfs');
      appFiles = await unpackLayers(oci.manifest, oci.blob, rootfs);
    });

    test('fails the runtime image checks (so they can fail): it has a shell and npm', () => {
      const bad = forbidden(appFiles);
      for (const f of ['/usr/bin/sh', '/usr/local/bin/npm', '/usr/local/lib/node_modules'])
        assert.ok(bad.includes(f), `${f} flagged`);
    });

    test('has sh and Node 24 on PATH, and no build CA', async () => {
      assert.ok(!config.config.Env?.some((e) => e.startsWith('NODE_EXTRA_CA_CERTS=')));
      const out = await inRootfs(rootfs, '65532:65532', config.config.Env ?? [], [
        '/bin/sh',
        '-c',
        'echo "$(id -u) $(node --version)"',
      ]);
      assert.match(out.stdout.trim(), /^65532 v24\.\d+\.\d+$/);
    });
  });
});
