/**
 * Runs `webhook/main.ts` as a child process, as a Deployment would run the bundle: with TLS
 * files from a throwaway CA (SAN 127.0.0.1), flags and env. Used by the process tests and
 * the integration tests against the real API server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServingCertificate } from '../../common/pki.ts';
import { inCgroup } from '@lifelease/harness/memcg';
import { stretched } from '@lifelease/harness/wait';

const MAIN = path.resolve(import.meta.dirname, '../../webhook/main.ts');

/** A new folder holding `tls.crt` and `tls.key` for 127.0.0.1 and localhost, from a throwaway CA. */
export async function writeServingFiles(
  prefix: string,
): Promise<{ dir: string; caPem: string; certFile: string; keyFile: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const { ca, serving } = await createServingCertificate(['127.0.0.1', 'localhost']);
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  await writeFile(certFile, serving.certPem);
  await writeFile(keyFile, serving.keyPem, { mode: 0o600 });
  return { dir, caPem: ca.certPem, certFile, keyFile };
}

export interface WebhookProcess {
  /** `https://127.0.0.1:<port>` */
  url: string;
  port: number;
  caPem: string;
  dir: string;
  certFile: string;
  keyFile: string;
  child: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: Record<string, unknown>[];
  /** Resolves with the exit code (or signal name) once the process ended. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | string>;
  /** Waits for a log line with this `msg` (and, when given, matching `where`). */
  waitForLog(
    msg: string,
    timeoutMs?: number,
    where?: (line: Record<string, unknown>) => boolean,
  ): Promise<Record<string, unknown>>;
}

export interface StartWebhookOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Defaults to a test image. */
  electorImage?: string | null;
  timeoutMs?: number;
  /** Entry point; default `webhook/main.ts` (e.g. the bundle's `webhook.js`, as the image runs it). */
  entry?: string;
  /** A memory cgroup (packages/harness/src/memcg.ts) to run in, as under the container's memory limit. */
  cgroup?: { procsFile: string };
}

export async function startWebhookProcess(options: StartWebhookOptions = {}): Promise<WebhookProcess> {
  const { dir, caPem, certFile, keyFile } = await writeServingFiles('webhook-proc-');

  const image = options.electorImage === undefined ? 'registry.example/lifelease:test' : options.electorImage;
  const args = [
    options.entry ?? MAIN,
    `--tls-cert-file=${certFile}`,
    `--tls-private-key-file=${keyFile}`,
    '--listen-address=127.0.0.1:0',
    '--shutdown-delay=0s',
    '--tls-reload-interval=200ms',
    ...(image ? [`--elector-image=${image}`] : []),
    ...(options.args ?? []),
  ];
  // Joining the cgroup before exec charges all the webhook's memory to it.
  const argv = options.cgroup
    ? inCgroup(options.cgroup.procsFile, [process.execPath, ...args])
    : [process.execPath, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { PATH: process.env['PATH'] ?? '', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  type Match = (l: Record<string, unknown>) => boolean;
  const waiters: { match: Match; resolve: (l: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  let buffer = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        for (const w of [...waiters]) {
          if (w.match(entry)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(entry);
          }
        }
      } catch {
        stderr += `${line}\n`;
      }
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | string>((resolve) =>
    child.on('close', (code, signal) => resolve(code ?? signal ?? -1)),
  );

  // Bounds are for a quiet machine, stretched by the load: at a load average of 50 the
  // webhook process took over 20 s to log that it listens.
  const waitForLog = (msg: string, quietMs = options.timeoutMs ?? 20_000, where: Match = () => true) => {
    const timeoutMs = stretched(quietMs);
    const match: Match = (l) => l['msg'] === msg && where(l);
    const found = logs.find(match);
    if (found) return Promise.resolve(found);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `no "${msg}" log within ${timeoutMs} ms; stderr:\n${stderr}\nlogs:\n${JSON.stringify(logs)}`,
            ),
          ),
        timeoutMs,
      );
      const w = {
        match,
        resolve: (l: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      waiters.push(w);
      void exited.then((code) => {
        clearTimeout(timer);
        reject(
          new Error(
            `webhook exited (${code}) before "${msg}"; stderr:\n${stderr}\nlogs:\n${JSON.stringify(logs)}`,
          ),
        );
      });
    });
  };

  const stop = async (graceMs = 10_000) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
      return code;
    }
    await rm(dir, { recursive: true, force: true });
    return exited;
  };

  const proc: WebhookProcess = {
    url: '',
    port: 0,
    caPem,
    dir,
    certFile,
    keyFile,
    child,
    logs,
    exited,
    stop,
    waitForLog,
  };
  try {
    const listening = await waitForLog('webhook listening');
    const port = Number(String(listening['address']).split(':').pop());
    proc.port = port;
    proc.url = `https://127.0.0.1:${port}`;
  } catch (err) {
    await stop(1000);
    throw err;
  }
  return proc;
}
