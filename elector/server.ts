/**
 * The elector's HTTP: the election API for the app (`GET /`, `GET /sse`) on loopback, and
 * the probe server (`/healthz`, `/readyz`, `/metrics`). App factories return fastify
 * instances that tests drive with `inject()` or real sockets; {@link listenAll} binds them.
 *
 * SSE: one `data:` event on connect and one per change, each with an `id:`; a `retry:` hint;
 * heartbeat comments; `X-Accel-Buffering: no` for proxies. Writes never wait: a client whose
 * socket buffer stays full is disconnected rather than allowed to hold anything up, and a
 * closed client is unsubscribed at once. Beyond `maxClients` open streams, new ones get 503
 * with `Retry-After`. Closing the app ends every stream (`preClose`).
 */
import { limitPipelining } from './pipelining.ts';
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { ListenAddress } from './config.ts';
import type { LeaderBoard, Snapshot } from './leader.ts';

export interface SseOptions {
  heartbeatMs: number;
  /** Reconnect delay suggested to clients (`retry:`). */
  retryMs: number;
  /** A client with more than this many unsent bytes is disconnected at once. */
  maxBufferedBytes: number;
  /** A client whose socket stays congested this long is disconnected. */
  slowClientMs: number;
  /** Open streams (all listeners together) beyond which new ones get 503 and `Retry-After`. */
  maxClients: number;
}

export const DEFAULT_SSE: SseOptions = {
  heartbeatMs: 15_000,
  retryMs: 2_000,
  maxBufferedBytes: 256 * 1024,
  slowClientMs: 30_000,
  maxClients: 1000,
};

export interface ElectionApiOptions {
  board: LeaderBoard;
  logger: FastifyBaseLogger;
  sse?: Partial<SseOptions>;
  /** Called when a slow client is dropped (metrics). */
  onSseDropped?: () => void;
  /** Called when a stream is refused because `maxClients` are open (metrics). */
  onSseRejected?: () => void;
  /** Time source for congestion tracking; default `Date.now`. */
  now?: () => number;
}

const ALLOWED = 'GET, HEAD';

function baseOptions(logger: FastifyBaseLogger) {
  return {
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    // Idle keep-alive sockets must not hold up shutdown; streams end in preClose.
    forceCloseConnections: true,
    return503OnClosing: true,
  } as const;
}

/** Frames one SSE event. */
export function sseEvent(snapshot: Snapshot, retryMs?: number): string {
  const retry = retryMs === undefined ? '' : `retry: ${retryMs}\n`;
  return `${retry}id: ${snapshot.id}\ndata: ${JSON.stringify(snapshot.result)}\n\n`;
}

/** The election API: `GET /` and `GET /sse`. */
export function buildElectionApi(options: ElectionApiOptions): FastifyInstance {
  const { board } = options;
  const sse: SseOptions = { ...DEFAULT_SSE, ...options.sse };
  const now = options.now ?? Date.now;
  const app = fastify(baseOptions(options.logger));
  const streams = new Set<ServerResponse>();

  app.get('/', async (_request, reply) => {
    const { result, known } = board.snapshot();
    return reply
      .code(known ? 200 : 503)
      .header('cache-control', 'no-store')
      .send(result);
  });

  app.get('/sse', (request, reply) => {
    if (request.method === 'HEAD') {
      // A HEAD request gets the stream's headers, not a stream that never ends.
      return reply.code(200).header('content-type', 'text/event-stream; charset=utf-8').send();
    }
    if (board.subscriberCount >= sse.maxClients) {
      // A client that reconnects in a loop without closing its streams must not grow the
      // elector past its memory limit; `GET /` still answers.
      options.onSseRejected?.();
      return reply
        .code(503)
        .header('retry-after', String(Math.ceil(sse.retryMs / 1000)))
        .send({
          error: 'Service Unavailable',
          message: `${board.subscriberCount} SSE streams are open, the limit (--sse-max-clients) is ${sse.maxClients}: close unused streams, or poll GET /`,
        });
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    streams.add(res);

    let congestedSince: number | undefined;
    let closed = false;
    const drop = () => {
      if (closed) return;
      options.onSseDropped?.();
      request.log.warn({ buffered: res.writableLength }, 'sse client too slow, disconnecting');
      cleanup();
      res.destroy();
    };
    const write = (chunk: string) => {
      if (closed) return;
      if (res.writableLength > sse.maxBufferedBytes) {
        drop();
        return;
      }
      if (!res.write(chunk) && congestedSince === undefined) congestedSince = now();
    };
    res.on('drain', () => {
      congestedSince = undefined;
    });

    const unsubscribe = board.subscribe((snapshot) => write(sseEvent(snapshot)));
    const heartbeat = setInterval(() => {
      if (congestedSince !== undefined && now() - congestedSince >= sse.slowClientMs) {
        drop();
        return;
      }
      write(': heartbeat\n\n');
    }, sse.heartbeatMs);
    const cleanup = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      streams.delete(res);
    };
    // Forget a client the moment its connection goes, whoever closed it. (Not the request's
    // 'close': Node emits that once the request has been read, long before the stream ends.)
    res.on('close', cleanup);

    write(sseEvent(board.snapshot(), sse.retryMs));
  });

  // End every stream when the server closes, or close() would wait for them forever.
  app.addHook('preClose', (done) => {
    for (const res of [...streams]) res.end();
    done();
  });

  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0];
    if (path === '/' || path === '/sse') {
      return reply.code(405).header('allow', ALLOWED).send({ error: 'Method Not Allowed', allow: ALLOWED });
    }
    return reply.code(404).send({ error: 'Not Found' });
  });

  return app;
}

export interface ProbeApiOptions {
  board: LeaderBoard;
  logger: FastifyBaseLogger;
  /** False when the elector can no longer work (its election loop died). */
  alive: () => boolean;
  /** Serve `/metrics` here (true unless a separate metrics address is configured). */
  registry: Registry | undefined;
}

/** `/healthz`: the process works. `/readyz`: the leader is known and confirmed. `/metrics`. */
export function buildProbeApi(options: ProbeApiOptions): FastifyInstance {
  const app = fastify(baseOptions(options.logger));
  app.get('/healthz', async (_request, reply) =>
    options.alive() ? reply.send({ status: 'ok' }) : reply.code(500).send({ status: 'election stopped' }),
  );
  app.get('/readyz', async (_request, reply) => {
    const { known, result, reason } = options.board.snapshot();
    const ready = known && result.state !== 'unknown';
    return reply.code(ready ? 200 : 503).send({ ready, state: result.state, reason });
  });
  if (options.registry) addMetricsRoute(app, options.registry);
  return app;
}

/** A listener for `/metrics` alone. */
export function buildMetricsApi(registry: Registry, logger: FastifyBaseLogger): FastifyInstance {
  const app = fastify(baseOptions(logger));
  addMetricsRoute(app, registry);
  return app;
}

function addMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get('/metrics', async (_request, reply) =>
    reply.header('content-type', registry.contentType).send(await registry.metrics()),
  );
}

/** Error codes meaning "this machine has no such address family" (e.g. IPv6 disabled). */
const NO_ADDRESS = new Set(['EADDRNOTAVAIL', 'EAFNOSUPPORT']);

export interface Listening {
  app: FastifyInstance;
  address: ListenAddress;
}

/**
 * Binds one app per address, all on one port: with port 0, the first bind picks it and the
 * rest follow (so the loopback pair shares a port). An address family the machine lacks
 * (IPv6 off) is skipped when another address is bound; any other failure is an error.
 */
export async function listenAll(
  build: () => FastifyInstance,
  addresses: readonly ListenAddress[],
  log: FastifyBaseLogger,
): Promise<Listening[]> {
  const attempts = addresses[0]?.port === 0 ? 5 : 1;
  for (let attempt = 1; ; attempt++) {
    const bound: Listening[] = [];
    let port = addresses[0]?.port ?? 0;
    try {
      for (const [i, address] of addresses.entries()) {
        const app = build();
        limitPipelining(app.server);
        try {
          await app.listen({ host: address.host, port });
        } catch (err) {
          await app.close();
          const code = (err as NodeJS.ErrnoException).code ?? '';
          if (i > 0 && NO_ADDRESS.has(code)) {
            log.warn({ address: address.host, code }, 'address not available on this machine, skipping it');
            continue;
          }
          throw err;
        }
        const actual = app.server.address();
        if (actual && typeof actual === 'object') port = actual.port;
        bound.push({ app, address: { host: address.host, port } });
      }
      return bound;
    } catch (err) {
      await Promise.all(bound.map((b) => b.app.close()));
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code !== 'EADDRINUSE' || attempt >= attempts) throw err;
    }
  }
}
