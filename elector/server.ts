/**
 * The elector's HTTP, on `node:http`: the election API for the app (`GET /`, `GET /sse`) on
 * loopback, and the probe server (`/healthz`, `/readyz`, `/metrics`). App factories return
 * {@link HttpApp}s that tests drive with `inject()` (the routing is a pure function of the
 * method and path) or real sockets; {@link listenAll} binds them.
 *
 * SSE: one `data:` event on connect and one per change, the `data:` line first and an `id:`
 * after it; a `retry:` hint;
 * heartbeat comments; `X-Accel-Buffering: no` for proxies. Writes never wait: a client whose
 * socket buffer stays full is disconnected rather than allowed to hold anything up, and a
 * closed client is unsubscribed at once. Beyond `maxClients` open streams, new ones get 503
 * with `Retry-After`. Closing the app ends every stream.
 *
 * Why not fastify (which the webhook uses): the elector is a sidecar in every opted-in pod,
 * and importing fastify costs a Node 24 process ~26 MiB of RSS and ~100 ms of start (README
 * "Measured figures") for five routes without bodies. What fastify gave them is kept here:
 * its answers to malformed requests (400/408/431 JSON), its timeouts (keep-alive 72 s, no
 * request timeout), 503 to requests that arrive while closing, idle connections closed on
 * close, and no request body read (no route takes one).
 */
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../common/logger.ts';
import type { ListenAddress } from './config.ts';
import type { LeaderBoard, Snapshot } from './leader.ts';
import { limitPipelining } from './pipelining.ts';
import type { Registry } from './prometheus.ts';

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
  logger: Logger;
  sse?: Partial<SseOptions>;
  /** Called when a slow client is dropped (metrics). */
  onSseDropped?: () => void;
  /** Called when a stream is refused because `maxClients` are open (metrics). */
  onSseRejected?: () => void;
  /** Time source for congestion tracking; default `Date.now`. */
  now?: () => number;
}

/** An answer with a body: what a route decides, before it is written to a socket. */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A route's result: an answer, or a stream the route writes itself (SSE). */
type Routed = Answer | { stream: (req: IncomingMessage, res: ServerResponse) => void };

/** `path` is the URL without its query; `url` is the whole request target. */
type Route = (method: string, path: string, url: string) => Routed | Promise<Routed>;

/** What `inject()` returns: fastify's `inject()` response, as far as tests use it. */
export interface InjectedResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
  json<T = unknown>(): T;
}

/** An HTTP app: its server, an in-process `inject()`, `listen` and `close`. */
export interface HttpApp {
  readonly server: Server;
  inject(request: { method?: string; url: string }): Promise<InjectedResponse>;
  listen(address: ListenAddress): Promise<void>;
  /** Stops accepting, ends streams and open connections; resolves once the server closed. */
  close(): Promise<void>;
}

const ALLOWED = 'GET, HEAD';
const JSON_TYPE = 'application/json; charset=utf-8';

function json(status: number, value: unknown, headers: Record<string, string> = {}): Answer {
  return { status, headers: { 'content-type': JSON_TYPE, ...headers }, body: JSON.stringify(value) };
}

/** fastify's answers to requests the HTTP parser rejects, byte for byte. */
function clientErrorBytes(code: string | undefined): string {
  const [status, message] =
    code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Client Timeout']
      : code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Exceeded maximum allowed HTTP header size']
        : [400, 'Client Error'];
  const body = `{"error":"${STATUS_CODES[status]}","message":"${message}","statusCode":${status}}`;
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${body.length}\r\nContent-Type: application/json\r\n\r\n${body}`;
}

const CLOSING_BODY = '{"error":"Service Unavailable","message":"Service Unavailable","statusCode":503}';

/**
 * An app around a route function. `onClose` runs first on close (ends SSE streams, as
 * fastify's `preClose` did).
 */
function createApp(route: Route, log: Logger, onClose: () => void = () => undefined): HttpApp {
  let closing = false;
  const sockets = new Set<Socket>();

  const write = (method: string, res: ServerResponse, answer: Answer) => {
    const body = Buffer.from(answer.body);
    res.writeHead(answer.status, { ...answer.headers, 'content-length': String(body.length) });
    res.end(method === 'HEAD' ? undefined : body);
  };

  const server = createServer({ keepAliveTimeout: 72_000, requestTimeout: 0 }, (req, res) => {
    const method = req.method ?? 'GET';
    // No route reads a body: a request that sends one gets its answer and the connection is
    // closed, so no body is ever read or buffered (fastify read up to 1 MiB of it first).
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    if (hasBody) res.shouldKeepAlive = false;
    if (closing) {
      res.shouldKeepAlive = false;
      res.writeHead(503, {
        'content-type': 'application/json',
        'content-length': String(CLOSING_BODY.length),
      });
      res.end(CLOSING_BODY);
      return;
    }
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    const answer = (routed: Routed) => {
      if ('stream' in routed) routed.stream(req, res);
      else write(method, res, routed);
    };
    const failed = (err: unknown) => {
      log.error({ err, method, path }, 'request failed');
      if (!res.headersSent)
        write(
          method,
          res,
          json(500, { statusCode: 500, error: 'Internal Server Error', message: String(err) }),
        );
      else res.destroy();
    };
    try {
      const routed = route(method, path, url);
      if (routed instanceof Promise) routed.then(answer, failed);
      else answer(routed);
    } catch (err) {
      failed(err);
    }
  });
  server.setTimeout(0);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    log.trace({ err }, 'client error');
    if (socket.writable) socket.write(clientErrorBytes(err.code));
    socket.destroy(err);
  });

  return {
    server,
    async inject({ method = 'GET', url }) {
      const routed = await route(method, url.split('?')[0]!, url);
      if ('stream' in routed)
        throw new Error(`inject() cannot read the stream of ${method} ${url}: use a socket`);
      const response = {
        statusCode: routed.status,
        headers: { ...routed.headers, 'content-length': String(Buffer.byteLength(routed.body)) },
        body: method === 'HEAD' ? '' : routed.body,
      };
      return { ...response, json: <T>() => JSON.parse(response.body) as T };
    },
    listen({ host, port }) {
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once('error', onError);
        server.listen({ host, port }, () => {
          server.off('error', onError);
          resolve();
        });
      });
    },
    close() {
      closing = true;
      onClose();
      return new Promise((resolve) => {
        if (!server.listening) {
          resolve();
          return;
        }
        server.close(() => resolve());
        // Idle keep-alive connections must not hold up shutdown; streams ended above.
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

/**
 * Frames one SSE event. The `data:` line comes first: NAIS's elector sends nothing else, and
 * clients written for it read the first line of an event and strip `data: ` (NAIS's own
 * test does exactly that). `id:` and `retry:` follow it; EventSource takes fields in any order.
 */
export function sseEvent(snapshot: Snapshot, retryMs?: number): string {
  const retry = retryMs === undefined ? '' : `retry: ${retryMs}\n`;
  return `data: ${JSON.stringify(snapshot.result)}\nid: ${snapshot.id}\n${retry}\n`;
}

/** 405 for the API's paths, 404 for the rest. */
function notFound(apiPaths: readonly string[], path: string): Answer {
  if (apiPaths.includes(path))
    return json(405, { error: 'Method Not Allowed', allow: ALLOWED }, { allow: ALLOWED });
  return json(404, { error: 'Not Found' });
}

const isRead = (method: string) => method === 'GET' || method === 'HEAD';

/** The election API: `GET /` and `GET /sse`. */
export function buildElectionApi(options: ElectionApiOptions): HttpApp {
  const { board, logger: log } = options;
  const sse: SseOptions = { ...DEFAULT_SSE, ...options.sse };
  const now = options.now ?? Date.now;
  const streams = new Set<ServerResponse>();

  const stream = (_req: IncomingMessage, res: ServerResponse) => {
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
      log.warn({ buffered: res.writableLength }, 'sse client too slow, disconnecting');
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
  };

  const route: Route = (method, path) => {
    if (!isRead(method)) return notFound(['/', '/sse'], path);
    if (path === '/') {
      const { result, known } = board.snapshot();
      return json(known ? 200 : 503, result, { 'cache-control': 'no-store' });
    }
    if (path !== '/sse') return notFound([], path);
    if (method === 'HEAD') {
      // A HEAD request gets the stream's headers, not a stream that never ends.
      return { status: 200, headers: { 'content-type': 'text/event-stream; charset=utf-8' }, body: '' };
    }
    if (board.subscriberCount >= sse.maxClients) {
      // A client that reconnects in a loop without closing its streams must not grow the
      // elector past its memory limit; `GET /` still answers.
      options.onSseRejected?.();
      return json(
        503,
        {
          error: 'Service Unavailable',
          message: `${board.subscriberCount} SSE streams are open, the limit (--sse-max-clients) is ${sse.maxClients}: close unused streams, or poll GET /`,
        },
        { 'retry-after': String(Math.ceil(sse.retryMs / 1000)) },
      );
    }
    return { stream };
  };

  // End every stream when the server closes, or close() would wait for them forever.
  return createApp(route, log, () => {
    for (const res of [...streams]) res.end();
  });
}

export interface ProbeApiOptions {
  board: LeaderBoard;
  logger: Logger;
  /** False when the elector can no longer work (its election loop died). */
  alive: () => boolean;
  /** Serve `/metrics` here (true unless a separate metrics address is configured). */
  registry: Registry | undefined;
}

async function metricsAnswer(registry: Registry): Promise<Answer> {
  return { status: 200, headers: { 'content-type': registry.contentType }, body: await registry.metrics() };
}

/** fastify's default 404, which the probe and metrics servers always answered. */
function routeNotFound(method: string, url: string): Answer {
  return json(404, { message: `Route ${method}:${url} not found`, error: 'Not Found', statusCode: 404 });
}

/** `/healthz`: the process works. `/readyz`: the leader is known and confirmed. `/metrics`. */
export function buildProbeApi(options: ProbeApiOptions): HttpApp {
  const { registry } = options;
  const route: Route = (method, path, url) => {
    if (!isRead(method)) return routeNotFound(method, url);
    if (path === '/healthz')
      return options.alive() ? json(200, { status: 'ok' }) : json(500, { status: 'election stopped' });
    if (path === '/readyz') {
      const { known, result, reason } = options.board.snapshot();
      const ready = known && result.state !== 'unknown';
      return json(ready ? 200 : 503, { ready, state: result.state, reason });
    }
    if (path === '/metrics' && registry) return metricsAnswer(registry);
    return routeNotFound(method, url);
  };
  return createApp(route, options.logger);
}

/** A listener for `/metrics` alone. */
export function buildMetricsApi(registry: Registry, logger: Logger): HttpApp {
  return createApp(
    (method, path, url) =>
      isRead(method) && path === '/metrics' ? metricsAnswer(registry) : routeNotFound(method, url),
    logger,
  );
}

/** Error codes meaning "this machine has no such address family" (e.g. IPv6 disabled). */
const NO_ADDRESS = new Set(['EADDRNOTAVAIL', 'EAFNOSUPPORT']);

export interface Listening {
  app: HttpApp;
  address: ListenAddress;
}

/**
 * Binds one app per address, all on one port: with port 0, the first bind picks it and the
 * rest follow (so the loopback pair shares a port). An address family the machine lacks
 * (IPv6 off) is skipped when another address is bound; any other failure is an error.
 */
export async function listenAll(
  build: () => HttpApp,
  addresses: readonly ListenAddress[],
  log: Logger,
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
