/**
 * scripts/lib/go.sh: the build scripts find Go on PATH or in its standard install folder, and
 * without Go they stop with exit 2 and say what is missing and how to do without Go.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const LIB = path.resolve(import.meta.dirname, '../../scripts/lib/go.sh');

function run(goInstallDir: string): { status: number | null; stdout: string; stderr: string } {
  const script = `
    log() { printf '[build] %s\\n' "$*" >&2; }
    source "$1"
    require_go "no binaries in /cache." "  no /cache/tool" "Install Go, or set TOOL."
    command -v go
  `;
  // A PATH without Go on it (bash and coreutils only); --norc: bash reads ~/.bashrc when its
  // stdin is a socket (as node gives it), and a root .bashrc may put Go on PATH.
  const r = spawnSync('bash', ['--norc', '-c', script, 'bash', LIB], {
    env: { PATH: '/usr/bin:/bin', GO_INSTALL_DIR: goInstallDir },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('require_go: no Go anywhere stops with exit 2 and every line of the message', () => {
  const empty = mkdtempSync(path.join(os.tmpdir(), 'nogo-'));
  try {
    const r = run(empty);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(
      r.stderr,
      '[build] Go is not installed, and no binaries in /cache.\n[build]   no /cache/tool\n[build] Install Go, or set TOOL.\n',
    );
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('require_go: Go in its install folder but not on PATH is put on PATH', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'go-'));
  try {
    mkdirSync(path.join(dir, 'bin'));
    const go = path.join(dir, 'bin', 'go');
    writeFileSync(go, '#!/bin/sh\n');
    chmodSync(go, 0o755);
    const r = run(path.join(dir, 'bin'));
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), go);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
