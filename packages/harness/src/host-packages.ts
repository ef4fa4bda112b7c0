/**
 * The Debian packages the real node, its builds and the image build need on the host:
 * buildah and debootstrap (the image), libseccomp-dev (runc), iptables and iproute2 (the
 * node's network), busybox-static (the node test's image). The demo, `cluster:up` and the
 * test runner install the missing ones themselves (root on Debian: apt-get, progress on the
 * terminal), so the README's two commands need nothing installed by hand; anywhere else they
 * say what to install.
 */
import { execFileSync, spawnSync } from 'node:child_process';

export const HOST_PACKAGES = [
  'buildah',
  'debootstrap',
  'libseccomp-dev',
  'iptables',
  'iproute2',
  'busybox-static',
] as const;

function installed(pkg: string): boolean {
  const q = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return q.status === 0 && q.stdout.trim() === 'install ok installed';
}

/** Installs the missing HOST_PACKAGES with apt-get (root on Debian), or throws with what to install. */
export function ensureHostPackages(log: (message: string) => void): void {
  const missing = HOST_PACKAGES.filter((p) => !installed(p));
  if (missing.length === 0) return;
  const command = `apt-get install -y ${missing.join(' ')}`;
  if (process.getuid?.() !== 0 || spawnSync('apt-get', ['--version']).status !== 0) {
    throw new Error(
      `these Debian packages are needed and not installed: ${missing.join(', ')} (as root: ${command})`,
    );
  }
  log(`installing the Debian packages the node and the image build need: ${missing.join(', ')} (${command})`);
  const options = {
    stdio: ['ignore', 'inherit', 'inherit'] as ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  };
  execFileSync('apt-get', ['update', '-q'], options);
  execFileSync('apt-get', ['install', '-y', '-q', '-o', 'DPkg::Lock::Timeout=600', ...missing], options);
}
