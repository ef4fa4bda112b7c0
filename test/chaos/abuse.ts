/**
 * Input abuse over real sockets, against the real processes:
 *
 * - the webhook (webhook/main.ts as a process, HTTPS with its own certificate): slowloris
 *   clients, oversized and truncated bodies, many concurrent connections, TLS handshakes
 *   that fail; meanwhile a canary client must keep getting its reviews answered, and the
 *   process must stay up, healthy and within a memory bound;
 * - the elector (the bundled sidecar, leading an election on a real control plane):
 *   garbage paths, methods, headers and bytes, thousands of SSE clients that connect and
 *   vanish, clients that never read; it keeps answering within its container memory limit;
 * - Kubernetes objects the elector may meet: Leases of its election's name with missing or
 *   odd fields, or of another kind of election; it never crashes, never claims what it
 *   does not hold, and leads again once the odd Lease is gone.
 *
 * Each check returns figures for the report and problems; `scale` picks sample (the test
 * command) or full (`npm run chaos`) counts.
 */
import {
  CoordinationV1Api,
  loadYaml,
  V1MicroTime,
  type V1Deployment,
  type V1Lease,
} from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { ClusterClient } from '@lifelease/harness/client';
import {
  createPod,
  grantElection,
  startElector,
  type ElectorProcess,
} from '@lifelease/harness/elector-process';
import { defaultOf, quantityValue } from '../../webhook/config.ts';
import { AS_INJECTED } from '../../webhook/render.ts';
import { createMemoryCgroup, type MemoryCgroup } from '@lifelease/harness/memcg';
import { cpuTimeMs } from '@lifelease/harness/process';
import { eventually, stretched } from '@lifelease/harness/wait';
import { createReview } from '../support/admission-reviews.ts';
import { startWebhookProcess, type WebhookProcess } from '../support/webhook-process.ts';
import type { Bundle } from './bundle.ts';
import { stats } from '../../bench/lib.ts';

export type Scale = 'sample' | 'full';

export interface CheckResult {
  name: string;
  figures: string[];
  problems: string[];
}

/** Resident memory of a process, in MiB (Linux). */
export function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const OPTED = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { generateName: 'web-', namespace: 'team', labels: { app: 'web', leaderElection: 'true' } },
  spec: { containers: [{ name: 'web', image: 'web:1' }] },
};

// ---------------------------------------------------------------------------------------
// The webhook over HTTPS.

/** Posts one review over a fresh TLS connection; resolves with status and latency. */
function postReview(
  wh: WebhookProcess,
  timeoutMs = 5000,
  agent?: Agent,
): Promise<{ status: number; ms: number; body: string }> {
  const started = performance.now();
  const payload = JSON.stringify(createReview(OPTED));
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: wh.port,
        path: '/mutate',
        method: 'POST',
        ca: wh.caPem,
        agent: agent ?? false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: timeoutMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started, body }));
        res.on('error', () => resolve({ status: 0, ms: performance.now() - started, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, ms: performance.now() - started, body: '' }));
    req.end(payload);
  });
}

/** A client that keeps asking while abuse goes on; every answer must be a 200 within `maxMs`. */
function canary(wh: WebhookProcess, maxMs: number) {
  let running = true;
  const latencies: number[] = [];
  const failures: string[] = [];
  const loop = (async () => {
    while (running) {
      const r = await postReview(wh, maxMs);
      latencies.push(r.ms);
      if (r.status !== 200) failures.push(`canary got ${r.status} after ${r.ms.toFixed(0)} ms`);
      await sleep(100);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const sorted = [...latencies].sort((a, b) => a - b);
      return {
        failures,
        count: latencies.length,
        p50: sorted[Math.floor(sorted.length / 2)] ?? NaN,
        max: sorted.at(-1) ?? NaN,
      };
    },
  };
}

function tls(wh: WebhookProcess): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: wh.port, ca: wh.caPem });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads what comes back on a socket until it closes or `ms` pass. */
function drain(s: Socket, ms: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const done = (closed: boolean) => {
      clearTimeout(timer);
      resolve({ text, closed });
    };
    const timer = setTimeout(() => done(false), ms);
    s.on('data', (c: Buffer) => (text += c.toString('latin1')));
    s.on('close', () => done(true));
    s.on('error', () => undefined);
  });
}

/** What a socket sends until `marker` has arrived, or what came within `ms`. */
function readUntil(s: Socket, marker: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.on('data', (c: Buffer) => {
      text += c.toString();
      if (text.includes(marker)) resolve(text);
    });
    setTimeout(() => resolve(text), ms).unref();
  });
}

async function inParallel<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

/** The webhook container of manifests/base: its memory limit and the env a test process takes from it. */
export function webhookContainer(): { memoryLimitMiB: number; env: Record<string, string> } {
  const deployment = loadYaml<V1Deployment>(
    readFileSync(path.join(import.meta.dirname, '../../manifests/base/deployment.yaml'), 'utf8'),
  );
  const container = deployment.spec?.template.spec?.containers.find((c) => c.name === 'webhook');
  const limit = quantityValue(String(container?.resources?.limits?.['memory'] ?? ''));
  if (!container || limit === undefined)
    throw new Error('manifests/base/deployment.yaml: no webhook memory limit');
  const env: Record<string, string> = {};
  for (const e of container.env ?? [])
    if (e.name === 'NODE_OPTIONS' && e.value) env['NODE_OPTIONS'] = e.value;
  return { memoryLimitMiB: limit / 2 ** 20, env };
}

export async function webhookHttpsAbuse(scale: Scale, bundle: Bundle): Promise<CheckResult[]> {
  const full = scale === 'full';
  // As deployed: the bundle the image runs, with the Deployment's NODE_OPTIONS, under its
  // memory limit where this machine lets us set one (over it, the kernel OOM-kills it).
  const deployed = webhookContainer();
  const cgroup = createMemoryCgroup('webhook-abuse', deployed.memoryLimitMiB);
  const wh = await startWebhookProcess({
    args: ['--reconcile-rbac=false', '--log-level=info'],
    entry: path.join(bundle.dir, 'webhook.js'),
    env: deployed.env,
    ...(cgroup ? { cgroup } : {}),
  });
  // The webhook is a plain child process: take it down if this process ends first.
  const killOnExit = () => wh.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const results: CheckResult[] = [];
  const pid = wh.child.pid;
  const rssBefore = rssMiB(pid);
  try {
    const run = async (name: string, fn: (r: CheckResult) => Promise<void>) => {
      const r: CheckResult = { name, figures: [], problems: [] };
      // 2 s on a quiet machine; at a load average of 30 on 2 cores the webhook gets a
      // fifteenth of a core, and 300 TLS handshakes ahead of the canary took 4.2 s.
      const c = canary(wh, stretched(2000));
      try {
        await fn(r);
      } catch (err) {
        r.problems.push(`${(err as Error).message}`);
      }
      const cr = await c.stop();
      r.figures.push(`canary: ${cr.count} reviews, p50 ${cr.p50.toFixed(1)} ms, max ${cr.max.toFixed(0)} ms`);
      r.problems.push(...cr.failures.slice(0, 5));
      if (wh.child.exitCode !== null) r.problems.push(`the webhook exited (${wh.child.exitCode})`);
      results.push(r);
    };

    await run('webhook: slowloris', async (r) => {
      const n = full ? 1000 : 150;
      const sockets = await inParallel(n, 50, async () => {
        const s = await tls(wh);
        s.on('error', () => undefined);
        s.write('POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n');
        return s;
      });
      const closed = sockets.map(() => false);
      sockets.forEach((s, i) => s.on('close', () => (closed[i] = true)));
      // Trickle a header byte per second per socket.
      const trickleFor = full ? 15_000 : 4000;
      const until = performance.now() + trickleFor;
      while (performance.now() < until) {
        for (const s of sockets) if (!s.destroyed) s.write('X');
        await sleep(1000);
      }
      const closedCount = closed.filter(Boolean).length;
      r.figures.push(
        `${n} slow TLS clients trickling a header byte a second for ${trickleFor / 1000} s; the server closed ${closedCount}`,
      );
      // The server's header deadline is 10 s (webhook/server.ts): the full run waits it out.
      if (full && closedCount < n)
        r.problems.push(`${n - closedCount} slowloris connections still open after ${trickleFor / 1000} s`);
      for (const s of sockets) s.destroy();
    });

    await run('webhook: oversized bodies', async (r) => {
      // Announced too large: refused from the header alone.
      const announced = await new Promise<string>((resolve) => {
        void tls(wh).then((s) => {
          void drain(s, 5000).then((d) => resolve(d.text.split('\r\n')[0] ?? ''));
          s.write(
            'POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{"a":',
          );
        });
      });
      if (!/ 413 /.test(announced))
        r.problems.push(`Content-Length 100 MiB answered ${announced || 'nothing'}`);
      // Chunked, no length: streamed past the limit.
      const chunked = await new Promise<{ line: string; sentMiB: number }>((resolve) => {
        void tls(wh).then(async (s) => {
          let line = '';
          let sent = 0;
          let closed = false;
          s.on('data', (c: Buffer) => (line ||= c.toString('latin1').split('\r\n')[0] ?? ''));
          s.on('close', () => (closed = true));
          s.on('error', () => undefined);
          s.write(
            'POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
          );
          const chunk = `100000\r\n${'x'.repeat(0x100000)}\r\n`;
          while (!closed && !line && sent < 64) {
            if (!s.write(chunk)) {
              // The server may stop reading once it has refused: do not wait forever.
              await Promise.race([new Promise((r2) => s.once('drain', r2)), sleep(2000)]);
              if (s.writableLength > 0) break;
            }
            sent++;
          }
          // The answer may still be on its way (a loaded machine): wait for it, or the close.
          for (const until = performance.now() + 5000; !closed && !line && performance.now() < until;)
            await sleep(50);
          s.destroy();
          resolve({ line, sentMiB: sent });
        });
      });
      if (!/ 413 /.test(chunked.line))
        r.problems.push(`a chunked body past the limit answered ${chunked.line || 'nothing'}`);
      r.figures.push(
        `Content-Length 100 MiB: ${announced}; chunked: ${chunked.line} after ${chunked.sentMiB} MiB sent`,
      );
    });

    await run('webhook: truncated bodies', async (r) => {
      const n = full ? 300 : 40;
      const outcomes = await inParallel(n, n, async (i) => {
        const s = await tls(wh);
        const body = JSON.stringify(createReview(OPTED));
        const cut = body.slice(0, Math.floor((body.length * (i % 10)) / 10));
        const d = drain(s, 35_000);
        s.write(
          `POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${cut}`,
        );
        // Half of them hang up (FIN), half keep the connection open and go silent.
        if (i % 2 === 0) s.end();
        else setTimeout(() => s.destroy(), full ? 33_000 : 2000).unref();
        const got = await d;
        s.destroy();
        return got.text.split('\r\n')[0] ?? '';
      });
      const statuses = new Map<string, number>();
      for (const o of outcomes) statuses.set(o || '(closed)', (statuses.get(o || '(closed)') ?? 0) + 1);
      r.figures.push(`${n} truncated bodies: ${[...statuses].map(([k, v]) => `${v}× ${k}`).join(', ')}`);
      for (const o of outcomes) if (/ 5\d\d /.test(o)) r.problems.push(`a truncated body got ${o}`);
    });

    await run('webhook: concurrent connections', async (r) => {
      const n = full ? 2000 : 300;
      const started = performance.now();
      const answers = await inParallel(n, n, () => postReview(wh, 30_000));
      const ok = answers.filter((a) => a.status === 200).length;
      const max = Math.max(...answers.map((a) => a.ms));
      r.figures.push(
        `${n} simultaneous TLS connections each posting a review: ${ok} answered 200 in ${((performance.now() - started) / 1000).toFixed(1)} s (slowest ${max.toFixed(0)} ms)`,
      );
      if (ok !== n) r.problems.push(`${n - ok} of ${n} concurrent reviews failed`);
    });

    await run('webhook: failing TLS handshakes', async (r) => {
      const n = full ? 500 : 60;
      const kinds = ['garbage', 'plain-http', 'tls1.0', 'hello-then-close', 'wrong-ca', 'half-open'] as const;
      const ok = await inParallel(n, 30, async (i) => {
        const kind = kinds[i % kinds.length]!;
        if (kind === 'garbage' || kind === 'plain-http' || kind === 'half-open') {
          const s = netConnect(wh.port, '127.0.0.1');
          s.on('error', () => undefined);
          await new Promise((res) => s.once('connect', res));
          if (kind === 'garbage')
            s.write(Buffer.from(Array.from({ length: 512 }, (_, k) => (k * 37 + i) & 255)));
          if (kind === 'plain-http') s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
          if (kind === 'half-open') s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
          const d = await drain(s, 1500);
          s.destroy();
          return kind === 'half-open' || d.closed || d.text.length > 0;
        }
        return new Promise<boolean>((resolve) => {
          const s = tlsConnect({
            host: '127.0.0.1',
            port: wh.port,
            ...(kind === 'wrong-ca' ? {} : { ca: wh.caPem }),
            ...(kind === 'tls1.0' ? { minVersion: 'TLSv1' as const, maxVersion: 'TLSv1' as const } : {}),
          });
          s.once('secureConnect', () => {
            s.destroy();
            resolve(kind === 'hello-then-close');
          });
          s.once('error', () => {
            s.destroy();
            resolve(kind !== 'hello-then-close');
          });
          if (kind === 'hello-then-close') setImmediate(() => s.destroy());
          setTimeout(() => {
            s.destroy();
            resolve(kind === 'hello-then-close');
          }, 3000).unref();
        });
      });
      r.figures.push(`${n} failing handshakes (${kinds.join(', ')})`);
      const unexpected = ok.filter((x) => !x).length;
      if (unexpected > 0) r.problems.push(`${unexpected} handshakes did not fail as expected`);
    });

    const health = await new Promise<number>((resolve) => {
      const req = httpsRequest(
        { host: '127.0.0.1', port: wh.port, path: '/healthz', ca: wh.caPem, timeout: 2000 },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', () => resolve(0));
      req.end();
    });
    const rssAfter = rssMiB(pid);
    const fatal = wh.logs.filter(
      (l) => l['level'] === 'fatal' || l['level'] === 60 || l['level'] === 'error',
    );
    const oomKills = cgroup?.oomKills() ?? 0;
    const limit = deployed.memoryLimitMiB;
    results.push({
      name: 'webhook: after the abuse',
      figures: [
        `/healthz ${health}; RSS ${rssBefore.toFixed(0)} MiB before, ${rssAfter.toFixed(0)} MiB after; ` +
          (cgroup
            ? `cgroup limit ${limit} MiB (the Deployment's), peak charge ${cgroup.peakMiB().toFixed(0)} MiB, ${oomKills} OOM kills`
            : `no memory cgroup on this machine: the Deployment's ${limit} MiB limit is not enforced`),
      ],
      problems: [
        ...(health === 200 ? [] : [`/healthz answered ${health}`]),
        ...(oomKills > 0 ? [`the kernel OOM-killed the webhook ${oomKills}× at its ${limit} MiB limit`] : []),
        ...(!cgroup && rssAfter > limit
          ? [`RSS ${rssAfter.toFixed(0)} MiB after the abuse, over the ${limit} MiB limit`]
          : []),
        ...fatal.slice(0, 3).map((l) => `logged ${String(l['level'])}: ${String(l['msg'])}`),
      ],
    });
  } finally {
    await wh.stop(2000);
    process.removeListener('exit', killOnExit);
    cgroup?.remove();
  }
  return results;
}

// ---------------------------------------------------------------------------------------
// The elector's HTTP.

function rawExchange(
  port: number,
  bytes: string | Buffer,
  waitMs = 1500,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.once('connect', () => s.write(bytes));
    void drain(s, waitMs).then((d) => {
      s.destroy();
      resolve(d);
    });
  });
}

function getStatus(url: string, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Starts a leading elector (the bundled sidecar) in a fresh namespace. */
export async function leadingElector(
  cluster: ClusterClient,
  bundle: Bundle,
  prefix: string,
  args: string[] = [],
  runtime: { env?: Record<string, string>; nodeArgs?: readonly string[] } = {},
  cgroup?: MemoryCgroup,
): Promise<{ elector: ElectorProcess; namespace: string; kubeconfigPath: string }> {
  const namespace = await cluster.createNamespace(prefix);
  const kubeconfigPath = await grantElection(cluster, namespace, 'app');
  const pod = await createPod(cluster.kubeConfig, namespace, 'app-0', { serviceAccountName: 'elector-app' });
  const elector = await startElector({
    election: 'app',
    pod,
    kubeconfigPath,
    entry: path.join(bundle.dir, 'elector.js'),
    args,
    ...runtime,
    ...(cgroup ? { cgroup } : {}),
  });
  await elector.waitFor((r) => r.is_leader, 30_000, 'leadership');
  return { elector, namespace, kubeconfigPath };
}

/** The memory limit the webhook gives the elector container by default (128Mi). */
export const ELECTOR_MEMORY_LIMIT_MIB = quantityValue(defaultOf('electorMemoryLimit'))! / 2 ** 20;
/** The elector's SSE stream cap in these checks: above the 500 unread streams of check 3. */
const SSE_MAX_CLIENTS = 600;
/** How much abuse may add to the elector's live memory (heap used + external). */
export const GROWTH_BOUND_MIB = 32;

export async function electorHttpAbuse(
  cluster: ClusterClient,
  bundle: Bundle,
  scale: Scale,
): Promise<CheckResult[]> {
  const full = scale === 'full';
  // As injected: the container's Node.js options and V8 flags, under its memory limit where this machine
  // lets us set one (a kernel memory cgroup: over the limit, the elector is OOM-killed).
  const cgroup = createMemoryCgroup('elector-abuse', ELECTOR_MEMORY_LIMIT_MIB);
  const { elector } = await leadingElector(
    cluster,
    bundle,
    'abuse-http',
    ['--sse-heartbeat=1s', `--sse-max-clients=${SSE_MAX_CLIENTS}`],
    AS_INJECTED,
    cgroup ?? undefined,
  );
  const port = Number(new URL(elector.apiUrl).port);
  const results: CheckResult[] = [];
  const rss = () => rssMiB(elector.pid);
  const baseline = rss();
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rss())), 100);
  // Memory the elector holds: the V8 heap in use plus external buffers, from its own
  // metrics. Heap in use also counts garbage until the next collection, so what abuse made
  // it hold is the floor (minimum) over a few seconds of samples while the abusive clients
  // are still connected. RSS also counts heap V8 reserved during a burst and keeps (sized
  // to this machine, not to a container limit): reported, not bounded.
  const live = async () =>
    ((await elector.metric('nodejs_heap_size_used_bytes')) ?? NaN) / 2 ** 20 +
    ((await elector.metric('nodejs_external_memory_bytes')) ?? NaN) / 2 ** 20;
  const floor = async (ms: number) => {
    let min = Infinity;
    let max = 0;
    for (const until = performance.now() + ms; performance.now() < until;) {
      const v = await live();
      min = Math.min(min, v);
      max = Math.max(max, v);
      await sleep(250);
    }
    return { min, max };
  };
  const idle = await floor(1000);
  let held = { min: idle.min, max: idle.max };
  const alive = async (r: CheckResult) => {
    const status = await getStatus(`${elector.apiUrl}/`);
    if (status !== 200) r.problems.push(`GET / answered ${status} afterwards`);
    if (!elector.running) r.problems.push('the elector exited');
  };
  try {
    // 1. Garbage requests.
    {
      const r: CheckResult = {
        name: 'elector: garbage paths, methods, headers, bytes',
        figures: [],
        problems: [],
      };
      const paths = [
        '/..%2f..%2fetc%2fpasswd',
        '/%00',
        `/${'a'.repeat(8000)}`,
        '/sse/../',
        '/?x=' + '%'.repeat(100),
        '//',
        '/sse?retry=-1',
        '/é',
        '*',
        'http://evil.example/',
      ];
      const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'FOO', 'CONNECT', 'HEAD'];
      const requests: (string | Buffer)[] = [];
      for (const m of methods)
        for (const p of paths)
          requests.push(`${m} ${p} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      requests.push(
        `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: localhost\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: y`).join('\r\n')}\r\n\r\n`,
        'GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n',
        'GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n',
        'GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        'POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
        'GET /\r\n\r\n',
        'GET / HTTP/9.9\r\n\r\n',
        '\r\n\r\n\r\n',
        Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131) & 255)),
        `GET / HTTP/1.1\r\nHost: localhost\r\n\r\n`.repeat(200),
      );
      const repeat = full ? 20 : 2;
      const statuses = new Map<string, number>();
      await inParallel(requests.length * repeat, 20, async (i) => {
        const d = await rawExchange(port, requests[i % requests.length]!);
        const line = /^HTTP\/1\.1 (\d+)/.exec(d.text)?.[1] ?? (d.closed ? 'closed' : 'silent');
        statuses.set(line, (statuses.get(line) ?? 0) + 1);
        if (/^5/.test(line)) r.problems.push(`request ${i % requests.length} got ${line}`);
      });
      r.figures.push(
        `${requests.length * repeat} requests: ${[...statuses]
          .sort()
          .map(([k, v]) => `${v}× ${k}`)
          .join(', ')}`,
      );
      await alive(r);
      results.push(r);
    }

    // 2. SSE clients connecting and vanishing.
    {
      const r: CheckResult = {
        name: 'elector: SSE clients that connect and vanish',
        figures: [],
        problems: [],
      };
      const n = full ? 10_000 : 2000;
      const started = performance.now();
      let gotEvent = 0;
      await inParallel(n, 200, async (i) => {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        await new Promise((res) => s.once('connect', res));
        s.write('GET /sse HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n');
        // Some read their first event; some vanish at once; some reset.
        if (i % 3 !== 0) {
          if ((await readUntil(s, 'data:', 2000)).includes('data:')) gotEvent++;
        }
        if (i % 2 === 0) s.resetAndDestroy();
        else s.destroy();
      });
      const seconds = (performance.now() - started) / 1000;
      // Every subscriber goes once the elector has seen its socket close, which on a loaded
      // machine can take a while after the last client left (a CI run at load 20 still had 2
      // after a fixed half second): wait for the outcome, bounded.
      let open = await elector.metric('elector_sse_clients');
      const closeStarted = performance.now();
      try {
        await eventually(
          'every SSE subscriber gone',
          async () => (open = await elector.metric('elector_sse_clients')) === 0,
          10_000,
        );
      } catch {
        r.problems.push(`${open} SSE subscribers left behind`);
      }
      r.figures.push(
        `${n} SSE clients in ${seconds.toFixed(1)} s (${gotEvent} read their first event); open afterwards: ${open} (after ${Math.round(performance.now() - closeStarted)} ms)`,
      );
      await alive(r);
      results.push(r);
    }

    // 3. Clients that never read: SSE streams and pipelined requests whose answers pile up.
    {
      const r: CheckResult = { name: 'elector: clients that never read', figures: [], problems: [] };
      // Other clients' GET / (one at a time), answered 200 within a bound far above any load
      // this machine sees: a client that never reads must not starve them. How long they
      // take is a figure, next to the same GETs before any abusive client connected (what
      // the machine's load alone costs), not a bound: a loaded machine stretches both.
      const latencies = async (when: string): Promise<number[]> => {
        const out: number[] = [];
        for (let i = 0; i < 20; i++) {
          const t = performance.now();
          const status = await getStatus(`${elector.apiUrl}/`, 30_000);
          out.push(performance.now() - t);
          if (status !== 200) r.problems.push(`GET / answered ${status || 'nothing in 30 s'} ${when}`);
        }
        return out;
      };
      const ms = (xs: number[]) => `p50 ${stats(xs).p50.toFixed(0)} ms, max ${stats(xs).max.toFixed(0)} ms`;
      const before = await latencies('before the clients that never read');
      const cpuBefore = cpuTimeMs(elector.pid!) ?? NaN;
      const streams: Socket[] = [];
      const n = full ? 500 : 100;
      for (let i = 0; i < n; i++) {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        s.write('GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n');
        s.pause();
        streams.push(s);
      }
      // One socket pipelining GET / without ever reading the answers.
      const pipelined = netConnect(port, '127.0.0.1');
      pipelined.on('error', () => undefined);
      pipelined.pause();
      const batch = 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(1000);
      const rounds = full ? 500 : 100;
      let written = 0;
      for (let i = 0; i < rounds && !pipelined.destroyed; i++) {
        if (!pipelined.write(batch)) {
          // The elector stopped reading from us: back-pressure, as it should.
          await Promise.race([new Promise((res) => pipelined.once('drain', res)), sleep(2000)]);
          if (pipelined.writableLength > 0) break;
        }
        written += 1000;
      }
      // Meanwhile the others are served.
      const during = await latencies('while clients did not read');
      const cpuSpent = (cpuTimeMs(elector.pid!) ?? NaN) - cpuBefore;
      // With every unread client still connected: what does the elector hold?
      held = await floor(full ? 15_000 : 5000);
      const now = rss();
      r.figures.push(
        `${n} SSE streams never read and ${written} pipelined GET / never read (the elector spent ${cpuSpent} ms of CPU on them); another client's GET / before: ${ms(before)}, while they stay connected: ${ms(during)}; RSS ${now.toFixed(0)} MiB`,
      );
      for (const s of [...streams, pipelined]) s.destroy();
      await alive(r);
      results.push(r);
    }

    // 4. A client that leaks streams: opens more than --sse-max-clients and closes none.
    {
      const r: CheckResult = { name: 'elector: a client that leaks SSE streams', figures: [], problems: [] };
      await eventually(
        'the unread streams closed',
        async () => (await elector.metric('elector_sse_clients')) === 0,
        10_000,
      );
      const n = SSE_MAX_CLIENTS + 100;
      const streams: Socket[] = [];
      const answers = new Map<string, number>();
      await inParallel(n, 50, async () => {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        streams.push(s);
        s.write('GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n');
        const head = await readUntil(s, '\r\n\r\n', 5000);
        const status = /^HTTP\/1\.1 (\d+)/.exec(head)?.[1] ?? 'none';
        answers.set(status, (answers.get(status) ?? 0) + 1);
      });
      const open = await elector.metric('elector_sse_clients');
      const rejected = await elector.metric('elector_sse_rejected_total');
      const health = await getStatus(`${elector.apiUrl}/`);
      r.figures.push(
        `${n} streams opened, none closed: ${[...answers].map(([k, v]) => `${v}× ${k}`).join(', ')}; open ${open}, refused ${rejected}; GET / ${health}`,
      );
      if (open !== SSE_MAX_CLIENTS) r.problems.push(`${open} streams open, the limit is ${SSE_MAX_CLIENTS}`);
      if (answers.get('503') !== n - SSE_MAX_CLIENTS)
        r.problems.push(`${answers.get('503') ?? 0} refused with 503, expected ${n - SSE_MAX_CLIENTS}`);
      for (const s of streams) s.destroy();
      await alive(r);
      results.push(r);
    }
  } finally {
    clearInterval(sampler);
    peak = Math.max(peak, rss());
    const grown = held.min - idle.min;
    const problems = !(grown <= GROWTH_BOUND_MIB)
      ? [`the elector held ${grown.toFixed(0)} MiB more under abuse (bound ${GROWTH_BOUND_MIB} MiB)`]
      : [];
    const oomKills = cgroup?.oomKills() ?? 0;
    if (oomKills > 0)
      problems.push(
        `the kernel OOM-killed the elector ${oomKills}× at its ${ELECTOR_MEMORY_LIMIT_MIB} MiB limit`,
      );
    results.push({
      name: 'elector: memory',
      figures: [
        `heap used + external: ${idle.min.toFixed(0)} MiB idle; with the unread clients connected ${held.min.toFixed(0)}-${held.max.toFixed(0)} MiB (held +${grown.toFixed(0)} MiB; bound +${GROWTH_BOUND_MIB} MiB)`,
        `RSS ${baseline.toFixed(0)} MiB idle, peak ${peak.toFixed(0)} MiB; ` +
          (cgroup
            ? `cgroup limit ${ELECTOR_MEMORY_LIMIT_MIB} MiB, peak charge ${cgroup.peakMiB().toFixed(0)} MiB, ${oomKills} OOM kills`
            : `no memory cgroup on this machine: the ${ELECTOR_MEMORY_LIMIT_MIB} MiB limit is not enforced`),
      ],
      problems,
    });
    await elector.stop();
    cgroup?.remove();
  }
  return results;
}

// ---------------------------------------------------------------------------------------
// Odd Kubernetes objects.

/** Leases of the election's name an elector may meet, with what it must conclude. */
export function oddLeases(self: {
  name: string;
  uid: string;
}): { name: string; lease: V1Lease; leads: boolean }[] {
  const m = (extra: Partial<NonNullable<V1Lease['metadata']>>) => ({ name: 'app', ...extra });
  const owner = (o: Record<string, unknown>) => [
    o as unknown as NonNullable<NonNullable<V1Lease['metadata']>['ownerReferences']>[number],
  ];
  return [
    { name: 'no spec', lease: { metadata: m({}) }, leads: false },
    { name: 'empty holderIdentity', lease: { metadata: m({}), spec: { holderIdentity: '' } }, leads: false },
    {
      name: 'holderIdentity of 253 characters',
      lease: { metadata: m({}), spec: { holderIdentity: 'h'.repeat(253) } },
      leads: false,
    },
    {
      name: 'owned by a Pod that never existed',
      lease: {
        metadata: m({
          ownerReferences: owner({
            apiVersion: 'v1',
            kind: 'Pod',
            name: 'ghost',
            uid: '00000000-0000-0000-0000-000000000001',
          }),
        }),
        spec: { holderIdentity: 'ghost' },
      },
      leads: true, // reclaimed: the owner is missing (the GC may also remove it first)
    },
    {
      name: 'owned by a ConfigMap',
      lease: {
        metadata: m({
          ownerReferences: owner({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            name: 'cm',
            uid: '00000000-0000-0000-0000-000000000002',
          }),
        }),
        spec: { holderIdentity: self.name },
      },
      leads: false,
    },
    {
      name: "our labels, but no owner and no annotations, naming the elector's own pod",
      lease: {
        metadata: m({
          labels: { 'app.kubernetes.io/managed-by': 'lifelease', 'lifelease.dev/election': 'app' },
        }),
        spec: { holderIdentity: self.name },
      },
      // Orphaned and without a uid, it is judged by the pod of that name, which is this one:
      // every elector concludes the same, so this pod may lead.
      leads: true,
    },
    {
      name: 'our annotations naming the own pod by uid, no owner (an orphaned own Lease)',
      lease: {
        metadata: m({
          labels: { 'app.kubernetes.io/managed-by': 'lifelease' },
          annotations: {
            'lifelease.dev/leader-pod': self.name,
            'lifelease.dev/leader-uid': self.uid,
            'lifelease.dev/leader-hostname': self.name,
          },
        }),
        spec: { holderIdentity: self.name },
      },
      leads: true,
    },
    {
      name: 'a client-go lock (leaseDurationSeconds, renewTime) naming the own hostname',
      lease: {
        metadata: m({}),
        spec: {
          holderIdentity: self.name,
          leaseDurationSeconds: 15,
          acquireTime: new V1MicroTime(),
          renewTime: new V1MicroTime(),
          leaseTransitions: 7,
        },
      },
      leads: false,
    },
    {
      name: 'a coordinated leader election Lease (strategy, preferredHolder)',
      lease: {
        metadata: m({}),
        spec: {
          holderIdentity: 'kube-scheduler-x',
          strategy: 'OldestEmulationVersion',
          preferredHolder: 'x',
        },
      },
      // Without renewTime and leaseDurationSeconds it reads as a lock made by hand: followed
      // by its holder's name, never deleted, so the elector does not lead while it is there.
      leads: false,
    },
  ];
}

export async function leaseAbuse(cluster: ClusterClient, bundle: Bundle): Promise<CheckResult[]> {
  const { elector, namespace } = await leadingElector(cluster, bundle, 'abuse-lease', [
    '--owner-check-interval=1s',
  ]);
  const leases = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
  const results: CheckResult[] = [];
  const self = { name: elector.pod.name, uid: elector.pod.uid };
  try {
    for (const c of oddLeases(self)) {
      const r: CheckResult = { name: `elector meets a Lease: ${c.name}`, figures: [], problems: [] };
      // Replace the Lease, racing the elector's own campaign until the odd one is in place.
      let placed = false;
      for (let attempt = 0; attempt < 40 && !placed; attempt++) {
        await leases.deleteNamespacedLease({ name: 'app', namespace }).catch(() => undefined);
        try {
          await leases.createNamespacedLease({ namespace, body: c.lease });
          placed = true;
        } catch (err) {
          const code = (err as { code?: number }).code;
          if (code !== 409) {
            r.figures.push(`the API server refused it (${code}): not a Lease the elector can meet`);
            break;
          }
        }
      }
      if (placed) {
        const seen: string[] = [];
        const until = performance.now() + 2500;
        while (performance.now() < until) {
          try {
            const { status, body } = await elector.get();
            seen.push(`${status} ${body.state}${body.is_leader ? '*' : ''} ${body.name}`);
            if (!c.leads && (body.is_leader || body.name === elector.hostname)) {
              // Only a problem while the odd Lease is still there: once the garbage collector
              // or the elector's reclaim removed it, the elector may win its own.
              const now = await leases.readNamespacedLease({ name: 'app', namespace }).catch(() => undefined);
              const ownerUid = now?.metadata?.ownerReferences?.[0]?.uid;
              if (now && ownerUid !== self.uid) {
                r.problems.push(`claimed leadership under a Lease it does not hold: ${JSON.stringify(body)}`);
                break;
              }
              seen.push('(the odd Lease was removed; its own Lease followed)');
            }
          } catch (err) {
            r.problems.push(`GET / failed: ${(err as Error).message}`);
            break;
          }
          await sleep(100);
        }
        r.figures.push(`answers: ${[...new Set(seen)].join(' | ')}`);
      }
      // Gone again: the elector leads (it may have reclaimed it already).
      await leases.deleteNamespacedLease({ name: 'app', namespace }).catch(() => undefined);
      try {
        await elector.waitFor((x) => x.is_leader, 15_000, 'leadership after the odd Lease went');
      } catch (err) {
        r.problems.push((err as Error).message.split('\n')[0]!);
      }
      if (!elector.running) r.problems.push('the elector exited');
      results.push(r);
      if (!elector.running) break;
    }
  } finally {
    const errors = elector
      .logLines()
      .filter((l) => l['level'] === 'fatal')
      .map((l) => String(l.msg));
    if (errors.length > 0) results.push({ name: 'elector: fatal logs', figures: [], problems: errors });
    await elector.stop();
  }
  return results;
}

/** Everything above, for `npm run chaos` (its own control plane). */
export async function runAbuse(options: {
  log: (m: string) => void;
  scale: Scale;
}): Promise<{ summary: string[]; failures: string[] }> {
  const { startCluster } = await import('@lifelease/harness/cluster');
  const { buildBundle } = await import('./bundle.ts');
  const summary: string[] = [];
  const failures: string[] = [];
  const report = (rs: CheckResult[]) => {
    for (const r of rs) {
      summary.push(`${r.problems.length === 0 ? 'ok  ' : 'FAIL'} ${r.name}: ${r.figures.join('; ')}`);
      failures.push(...r.problems.map((p) => `${r.name}: ${p}`));
    }
  };
  const bundle = await buildBundle();
  options.log('abuse: webhook over HTTPS');
  report(
    await webhookHttpsAbuse(options.scale, bundle).catch((err: unknown) => {
      bundle.remove();
      throw err;
    }),
  );
  const cluster = await startCluster();
  try {
    options.log('abuse: elector HTTP');
    report(await electorHttpAbuse(cluster, bundle, options.scale));
    options.log('abuse: odd Leases');
    report(await leaseAbuse(cluster, bundle));
  } finally {
    await cluster.stop();
    bundle.remove();
  }
  return { summary, failures };
}
