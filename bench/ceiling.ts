/**
 * Starts bench/ceiling-server.ts as its own process, with a fresh serving certificate for
 * 127.0.0.1: the ceiling of the webhook's stack (bench/webhook.ts), or a webhook that does no
 * work registered with a real API server (bench/pod-create.ts).
 */
import { spawn } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { writeServingFiles } from '../test/support/webhook-process.ts';

export interface Ceiling {
  url: string;
  /** The CA that signed its certificate (PEM). */
  caPem: string;
  pid: number;
  stop(): Promise<void>;
}

/** `patch`: a base64 JSON patch every review is answered with (none: allowed, unpatched). */
export async function startCeiling(options: { patch?: string } = {}): Promise<Ceiling> {
  const { dir, caPem, certFile, keyFile } = await writeServingFiles('lifelease-bench-ceiling-');
  const args = [path.join(import.meta.dirname, 'ceiling-server.ts'), certFile, keyFile];
  if (options.patch !== undefined) {
    await writeFile(path.join(dir, 'patch.b64'), options.patch);
    args.push(path.join(dir, 'patch.b64'));
  }
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.once('line', (l) => resolve((JSON.parse(l) as { port: number }).port));
      child.once('exit', (code) => reject(new Error(`ceiling server exited (${code})`)));
    });
    return { url: `https://127.0.0.1:${port}`, caPem, pid: child.pid!, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
