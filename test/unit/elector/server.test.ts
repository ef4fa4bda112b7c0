/**
 * The election API and probe server: routes through `inject()`, SSE on real loopback
 * sockets (events, ids, heartbeats, disconnects, slow clients, shutdown).
 */
import assert from 'node:assert/strict';
import { request, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger } from '../../../common/logger.ts';
import { LeaderBoard, type Verdict } from '../../../elector/leader.ts';
import { createMetrics } from '../../../elector/observe.ts';
import { buildElectionApi, buildProbeApi, listenAll, type SseOptions } from '../../../elector/server.ts';
import { onSseEvents } from '@lifelease/harness/sse';

const log = createLogger({ level: 'silent', stream: { write: () => true } });
const leader = (name: string, uid = `uid-${name}`): Verdict => ({
  state: 'follower',
  name,
  pod: name,
  uid,
  reason: 'follower',
});

describe('GET / and routing', () => {
  test('503 with the full shape before the first result, then 200', async () => {
    const board = new LeaderBoard();
    const app = buildElectionApi({ board, logger: log });
    const before = await app.inject({ method: 'GET', url: '/' });
    assert.equal(before.statusCode, 503);
    assert.deepEqual(before.json(), {
      name: '',
      last_update: '',
      is_leader: false,
      state: 'unknown',
      leader_pod: '',
    });
    board.publish(leader('app-1'), Date.parse('2024-01-01T00:00:00Z'));
    const res = await app.inject({ method: 'GET', url: '/' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(res.json(), {
      name: 'app-1',
      last_update: '2024-01-01T00:00:00.000Z',
      is_leader: false,
      state: 'follower',
      leader_pod: 'app-1',
    });
    await app.close();
  });

  test('HEAD works, other methods are 405 with Allow, unknown paths 404', async () => {
    const app = buildElectionApi({ board: new LeaderBoard(), logger: log });
    assert.equal((await app.inject({ method: 'HEAD', url: '/' })).statusCode, 503);
    const head = await app.inject({ method: 'HEAD', url: '/sse' });
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers['content-type'], 'text/event-stream; charset=utf-8');
    for (const [method, url] of [
      ['POST', '/'],
      ['PUT', '/'],
      ['DELETE', '/sse'],
      ['PATCH', '/?x=1'],
    ] as const) {
      const res = await app.inject({ method, url });
      assert.equal(res.statusCode, 405, `${method} ${url}`);
      assert.equal(res.headers['allow'], 'GET, HEAD');
    }
    assert.equal((await app.inject({ method: 'GET', url: '/leader' })).statusCode, 404);
    assert.equal((await app.inject({ method: 'POST', url: '/nope' })).statusCode, 404);
    await app.close();
  });
});

describe('probes', () => {
  test('/healthz follows alive(), /readyz the known and confirmed state, /metrics prom text', async () => {
    const board = new LeaderBoard();
    let alive = true;
    const metrics = createMetrics({
      confirmationAgeSeconds: () => 1.5,
      sseClients: () => board.subscriberCount,
      labels: { election: 'reports' },
    });
    const app = buildProbeApi({ board, logger: log, alive: () => alive, registry: metrics.registry });
    assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200);
    alive = false;
    assert.equal((await app.inject({ url: '/healthz' })).statusCode, 500);
    const notReady = await app.inject({ url: '/readyz' });
    assert.equal(notReady.statusCode, 503);
    assert.equal(notReady.json<{ reason: string }>().reason, 'starting');
    board.publish(leader('x'), 0);
    assert.equal((await app.inject({ url: '/readyz' })).statusCode, 200);
    board.publish({ state: 'unknown', name: '', pod: '', uid: '', reason: 'unconfirmed' }, 1);
    assert.equal((await app.inject({ url: '/readyz' })).statusCode, 503);
    const text = (await app.inject({ url: '/metrics' })).body;
    for (const name of [
      'elector_is_leader{election="reports"} 0',
      'elector_confirmation_age_seconds{election="reports"} 1.5',
      'elector_sse_clients{election="reports"} 0',
      'elector_campaigns_total{result="won",election="reports"} 0',
      'process_resident_memory_bytes',
    ]) {
      assert.ok(text.includes(name), `missing ${name}`);
    }
    await app.close();
  });

  test('no /metrics on the probe server when a metrics address is set', async () => {
    const app = buildProbeApi({
      board: new LeaderBoard(),
      logger: log,
      alive: () => true,
      registry: undefined,
    });
    assert.equal((await app.inject({ url: '/metrics' })).statusCode, 404);
    await app.close();
  });
});

/** An SSE client on a real socket that collects events and comments. */
function sseClient(url: string) {
  const events: { id: string; data: unknown; retry?: string }[] = [];
  const comments: string[] = [];
  let response: IncomingMessage | undefined;
  let ended = false;
  const req = request(`${url}/sse`, { agent: false });
  const ready = new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', (res) => {
      response = res;
      onSseEvents(res, (event) => {
        comments.push(...event.comments);
        if (event.data !== undefined) {
          events.push({
            id: event.id ?? '',
            data: JSON.parse(event.data),
            ...(event.retry ? { retry: event.retry } : {}),
          });
        }
      });
      res.on('end', () => (ended = true));
      res.on('close', () => (ended = true));
      resolve(res);
    });
    req.on('error', reject);
  });
  req.end();
  return {
    events,
    comments,
    ready,
    get ended() {
      return ended;
    },
    get headers() {
      return response?.headers;
    },
    close: () => req.destroy(),
  };
}

async function until(what: string, fn: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('SSE', () => {
  const started: { close(): Promise<unknown> }[] = [];
  after(async () => {
    await Promise.all(started.map((s) => s.close()));
  });

  async function serve(board: LeaderBoard, sse: Partial<SseOptions> = {}, onSseDropped?: () => void) {
    const [bound] = await listenAll(
      () => buildElectionApi({ board, logger: log, sse, ...(onSseDropped ? { onSseDropped } : {}) }),
      [{ host: '127.0.0.1', port: 0 }],
      log,
    );
    assert.ok(bound);
    started.push(bound.app);
    return { app: bound.app, url: `http://127.0.0.1:${bound.address.port}` };
  }

  test('an event on connect (with retry and id), one per change, none for a resync; proxy headers', async () => {
    const board = new LeaderBoard();
    board.publish(leader('a'), 1000);
    const { url } = await serve(board, { retryMs: 1234 });
    const c = sseClient(url);
    await c.ready;
    assert.equal(c.headers?.['content-type'], 'text/event-stream; charset=utf-8');
    assert.equal(c.headers?.['x-accel-buffering'], 'no');
    assert.equal(c.headers?.['cache-control'], 'no-cache, no-transform');
    await until('first event', () => c.events.length === 1);
    assert.equal(c.events[0]!.retry, '1234');
    assert.equal(c.events[0]!.id, '1');
    assert.deepEqual(c.events[0]!.data, board.snapshot().result);
    board.publish(leader('a'), 2000); // same leader: no event
    board.publish(leader('b'), 3000);
    await until('second event', () => c.events.length === 2);
    await sleep(50);
    assert.equal(c.events.length, 2);
    assert.equal(c.events[1]!.id, '2');
    assert.equal((c.events[1]!.data as { name: string }).name, 'b');
    c.close();
  });

  test("every event's first line is `data: <JSON>` (a NAIS client reads that line alone); id and retry follow", async () => {
    const board = new LeaderBoard();
    board.publish(leader('a'), 1000);
    const { url } = await serve(board, { retryMs: 1234, heartbeatMs: 3_600_000 });
    let raw = '';
    const req = request(`${url}/sse`, { agent: false });
    req.on('response', (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (raw += chunk));
    });
    req.end();
    await until('first event', () => raw.includes('\n\n'));
    board.publish(leader('b'), 2000);
    await until('second event', () => raw.split('\n\n').length >= 3);
    req.destroy();
    const blocks = raw.split('\n\n').filter((b) => b !== '');
    assert.equal(blocks.length, 2);
    for (const block of blocks) {
      const [first, ...rest] = block.split('\n');
      // What NAIS's own SSE test does: the first line has the prefix, the rest of it is the JSON.
      assert.ok(first!.startsWith('data: '), `first line ${JSON.stringify(first)}`);
      assert.equal(typeof (JSON.parse(first!.slice(6)) as { name: unknown }).name, 'string');
      assert.ok(
        rest.every((line) => /^(id|retry): /.test(line)),
        `other lines ${JSON.stringify(rest)}`,
      );
    }
    assert.deepEqual(blocks[0]!.split('\n').slice(1), ['id: 1', 'retry: 1234']);
    assert.deepEqual(blocks[1]!.split('\n').slice(1), ['id: 2']);
  });

  test('heartbeat comments; a disconnected client is forgotten at once', async () => {
    const board = new LeaderBoard();
    const { url } = await serve(board, { heartbeatMs: 30 });
    const c = sseClient(url);
    await c.ready;
    await until('heartbeats', () => c.comments.length >= 2);
    assert.equal(board.subscriberCount, 1);
    c.close();
    await until('unsubscribe', () => board.subscriberCount === 0, 1000);
  });

  for (const [why, limits] of [
    ['its unsent bytes pass the cap', { maxBufferedBytes: 64 * 1024, slowClientMs: 3_600_000 }],
    // 1 s, not less: on a loaded 2-core machine even the reading client's socket can stay
    // congested for a few hundred ms while it catches up.
    ['its socket stays congested too long', { maxBufferedBytes: 1 << 30, slowClientMs: 1000 }],
  ] as const) {
    test(`a client that stops reading is dropped (${why}); the others get every event on time`, async () => {
      const board = new LeaderBoard();
      let dropped = 0;
      const { url } = await serve(board, { ...limits, heartbeatMs: 50 }, () => dropped++);
      const port = Number(new URL(url).port);
      // A raw client that sends a request and never reads a byte.
      const slow = connect(port, '127.0.0.1');
      slow.write('GET /sse HTTP/1.1\r\nHost: x\r\n\r\n');
      slow.pause();
      const fast = sseClient(url);
      await fast.ready;
      await until('both subscribed', () => board.subscriberCount === 2);
      // Push a lot, a few events per tick: many MB in total, far beyond socket buffers. A
      // reading client keeps up; the one that does not read falls behind without bound.
      const pad = 'x'.repeat(2000);
      const t0 = Date.now();
      let slowest = 0;
      for (let i = 0; i < 5000; i++) {
        // The CPU time of this thread, not the clock: at a load average of 30 the process was
        // descheduled for 378 ms in one publish, which says nothing about the publish.
        const p0 = process.threadCpuUsage();
        board.publish(leader(`leader-${i}-${pad}`), t0 + i);
        const used = process.threadCpuUsage(p0);
        slowest = Math.max(slowest, (used.user + used.system) / 1000);
        if (i % 10 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // A publish that did work for the slow client's backlog (copying it, waiting on it in a
      // loop) would spend CPU growing with the megabytes it holds back.
      assert.ok(slowest < 250, `one publish used ${slowest} ms of CPU: it worked for a client's backlog`);
      await until(
        'fast client got the last event',
        () => fast.events.some((e) => (e.data as { name: string }).name.startsWith('leader-4999-')),
        10_000,
      );
      await until('slow client dropped', () => dropped === 1 && board.subscriberCount === 1, 10_000);
      assert.ok(!fast.ended, 'the reading client stays connected');
      slow.destroy();
      fast.close();
    });
  }

  test('beyond maxClients open streams (over both listeners) a new one gets 503 with Retry-After; GET / still answers', async () => {
    const board = new LeaderBoard();
    board.publish(leader('a'), 1000);
    let rejected = 0;
    // Two listeners on one board, as the elector's 127.0.0.1 and ::1 pair.
    const listen = () =>
      listenAll(
        () =>
          buildElectionApi({
            board,
            logger: log,
            sse: { maxClients: 2, retryMs: 3000 },
            onSseRejected: () => rejected++,
          }),
        [{ host: '127.0.0.1', port: 0 }],
        log,
      );
    const both = [...(await listen()), ...(await listen())];
    started.push(...both.map((b) => b.app));
    const [first, second] = both.map((b) => `http://127.0.0.1:${b.address.port}`);
    const a = sseClient(first!);
    const b = sseClient(second!);
    await Promise.all([a.ready, b.ready]);
    await until('both subscribed', () => board.subscriberCount === 2);
    const refused = await get(`${first}/sse`);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '3');
    assert.match(refused.body, /2 SSE streams are open, the limit \(--sse-max-clients\) is 2/);
    assert.equal(rejected, 1);
    assert.equal((await get(`${second}/`)).status, 200);
    // A closed stream frees its place.
    a.close();
    await until('unsubscribed', () => board.subscriberCount === 1);
    const c = sseClient(second!);
    await c.ready;
    assert.equal(c.headers?.['content-type'], 'text/event-stream; charset=utf-8');
    await until('b and c subscribed', () => board.subscriberCount === 2);
    b.close();
    c.close();
  });

  test('closing the server ends open streams promptly', async () => {
    const board = new LeaderBoard();
    const { app, url } = await serve(board);
    const c = sseClient(url);
    await c.ready;
    await until('subscribed', () => board.subscriberCount === 1);
    const t0 = Date.now();
    await app.close();
    assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`);
    await until('stream ended', () => c.ended);
    assert.equal(board.subscriberCount, 0);
  });
});

describe('listenAll', () => {
  test('the loopback pair shares one port picked by the system', async () => {
    const board = new LeaderBoard();
    board.publish(leader('a'), 0);
    const bound = await listenAll(
      () => buildElectionApi({ board, logger: log }),
      [
        { host: '127.0.0.1', port: 0 },
        { host: '::1', port: 0 },
      ],
      log,
    );
    try {
      assert.ok(bound.length >= 1);
      const ports = new Set(bound.map((b) => b.address.port));
      assert.equal(ports.size, 1);
      for (const b of bound) {
        const host = b.address.host.includes(':') ? `[${b.address.host}]` : b.address.host;
        const status = await new Promise<number>((resolve, reject) => {
          request(`http://${host}:${b.address.port}/`, { agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          })
            .on('error', reject)
            .end();
        });
        assert.equal(status, 200, b.address.host);
      }
    } finally {
      await Promise.all(bound.map((b) => b.app.close()));
    }
  });
});

/** A plain GET on a fresh connection: status, headers, body. */
function get(url: string): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
