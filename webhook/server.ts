/**
 * The HTTP layer, and the only one: a fastify app factory (`buildServer`) serving
 * `POST /mutate`, `/healthz`, `/readyz` and `/metrics`, over HTTPS when given a certificate
 * (always, in production), over plain HTTP for `app.inject()` tests and the optional
 * metrics listener. It translates HTTP to `admission.ts` and back; all decisions live there.
 *
 * Malformed input never crashes it and always gets a clear JSON error: 415 for another
 * content type, 413 above the body limit, 400 for broken JSON or something that is not an
 * AdmissionReview. Anything that is an AdmissionReview gets an AdmissionReview back (200),
 * refusals included, with the request's uid.
 */
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
} from 'fastify';
import type { SecureContextOptions } from 'node:tls';
import { encodeReview, handleAdmission, parseReview, podDisplayName, type Outcome } from './admission.ts';
import type { InjectionConfig } from './inject.ts';
import type { WebhookMetrics } from './metrics.ts';

export interface Readiness {
  ready: boolean;
  /** Why not, for the `/readyz` body and logs. */
  reason?: string;
}

export interface ServerOptions {
  logger: FastifyBaseLogger;
  injection: InjectionConfig;
  metrics: WebhookMetrics;
  /** Largest accepted body, in bytes. */
  maxRequestBytes: number;
  /** Serve HTTPS with these options; plain HTTP when omitted. */
  tls?: SecureContextOptions;
  readiness: () => Readiness;
  /** Serve `/mutate` (false for the plain metrics listener). Default true. */
  admission?: boolean;
  /**
   * How long a client may take to send its request headers; default 10 s. The API server
   * sends a review at once, so only slow (slowloris) clients come near it.
   */
  headersTimeoutMs?: number;
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** How long an idle keep-alive connection stays open: longer than the API server keeps it (90 s). */
export const KEEP_ALIVE_TIMEOUT_MS = 120_000;

type ErrorWithCode = Error & { code?: string; statusCode?: number };

type Bindings = Parameters<FastifyBaseLogger['child']>[0];
type ChildLoggerOptions = NonNullable<Parameters<FastifyBaseLogger['child']>[1]>;

/**
 * `request.log`, made only when something logs through it (an error). fastify makes a child
 * logger for every request (its bindings copied, its methods made) that the review never uses:
 * the review's line goes through the server's logger with the same `reqId` field, the same line.
 */
class RequestLogger {
  #parent: FastifyBaseLogger;
  #bindings: Bindings;
  #options: ChildLoggerOptions;
  #made: FastifyBaseLogger | undefined;
  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.#parent = parent;
    this.#bindings = bindings;
    this.#options = options;
  }
  get #log(): FastifyBaseLogger {
    return (this.#made ??= this.#parent.child(this.#bindings, this.#options));
  }
  get level(): string {
    return this.#log.level;
  }
  set level(level: string) {
    this.#log.level = level;
  }
  fatal(...args: unknown[]) {
    Reflect.apply(this.#log.fatal, this.#log, args);
  }
  error(...args: unknown[]) {
    Reflect.apply(this.#log.error, this.#log, args);
  }
  warn(...args: unknown[]) {
    Reflect.apply(this.#log.warn, this.#log, args);
  }
  info(...args: unknown[]) {
    Reflect.apply(this.#log.info, this.#log, args);
  }
  debug(...args: unknown[]) {
    Reflect.apply(this.#log.debug, this.#log, args);
  }
  trace(...args: unknown[]) {
    Reflect.apply(this.#log.trace, this.#log, args);
  }
  silent(...args: unknown[]) {
    Reflect.apply(this.#log.silent, this.#log, args);
  }
  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.#log.child(bindings, options);
  }
}

const REJECTIONS: Record<
  string,
  { status: number; reason: string; message: (err: ErrorWithCode, limit: number) => string }
> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    status: 415,
    reason: 'unsupported-media-type',
    message: () => 'send the AdmissionReview as JSON with Content-Type: application/json',
  },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    status: 413,
    reason: 'too-large',
    message: (_e, limit) => `the request body is larger than ${limit} bytes (--max-request-bytes)`,
  },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: {
    status: 400,
    reason: 'invalid-json',
    message: () => 'the request body does not match its Content-Length',
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    status: 400,
    reason: 'invalid-json',
    message: () => 'the request body is empty; send an AdmissionReview',
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    status: 400,
    reason: 'invalid-json',
    message: (e) => `the request body is not valid JSON (${e.message})`,
  },
};

/** Builds the app; the caller listens and closes. */
export function buildServer(options: ServerOptions): FastifyInstance {
  const { metrics } = options;
  const app = Fastify({
    loggerInstance: options.logger,
    // One log line per review, written by the route with its outcome; no per-request noise.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: (logger, bindings, options) =>
      new RequestLogger(logger, bindings, options) as unknown as FastifyBaseLogger,
    bodyLimit: options.maxRequestBytes,
    // The API server's webhook timeout is at most 30 s; nothing legitimate takes longer.
    requestTimeout: 30_000,
    return503OnClosing: true,
    // Idle keep-alive connections outlive the API server's: its webhook client (client-go's
    // transport) drops an idle connection after 90 s, fastify's default closed ours at 72 s.
    // Then a pod CREATE after more than 72 s of quiet paid a new TCP and TLS handshake, and
    // one sent just as we closed would fail (a POST is not retried; failurePolicy: Fail).
    // The side that closes first must be the client.
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    // Node checks these deadlines every `connectionsCheckingInterval` (30 s by default) and
    // defaults headersTimeout to 60 s, so a client trickling header bytes held its
    // connection for about 60 s whatever requestTimeout said. Check every second.
    ...(options.tls
      ? {
          https: {
            ...options.tls,
            headersTimeout: options.headersTimeoutMs ?? 10_000,
            connectionsCheckingInterval: 1000,
          },
        }
      : {}),
  });

  const log = app.log;

  // AdmissionReviews are JSON; fastify would also parse text/plain, which must be a 415 here.
  app.removeContentTypeParser('text/plain');

  const outcomes = new WeakMap<FastifyRequest, Outcome | 'rejected'>();

  app.setErrorHandler((err: ErrorWithCode, request, reply) => {
    const known = err.code ? REJECTIONS[err.code] : undefined;
    if (known) {
      metrics.rejectedRequests.inc({ reason: known.reason });
      outcomes.set(request, 'rejected');
      return reply.code(known.status).send({ message: known.message(err, options.maxRequestBytes) });
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) request.log.error({ err }, 'request failed');
    return reply.code(status).send({ message: status === 500 ? 'internal error' : err.message });
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send({ message: `no route ${request.method} ${request.url}; the webhook serves POST /mutate` }),
  );

  app.get('/healthz', () => ({ status: 'ok' }));
  app.get('/readyz', (_request, reply) => {
    const r = options.readiness();
    return reply
      .code(r.ready ? 200 : 503)
      .send(r.ready ? { status: 'ok' } : { status: 'not ready', reason: r.reason });
  });
  app.get('/metrics', async (_request, reply) =>
    reply.header('content-type', metrics.registry.contentType).send(await metrics.registry.metrics()),
  );

  if (options.admission ?? true) {
    app.addHook('onResponse', (request, reply, done) => {
      if (request.routeOptions.url === '/mutate' && request.method === 'POST') {
        metrics.duration.observe({ outcome: outcomes.get(request) ?? 'rejected' }, reply.elapsedTime / 1000);
      }
      done();
    });

    app.post('/mutate', (request, reply) => {
      const parsed = parseReview(request.body);
      if (!parsed.ok) {
        metrics.rejectedRequests.inc({ reason: 'invalid-review' });
        outcomes.set(request, 'rejected');
        return reply.code(400).send({ message: parsed.message });
      }
      const result = handleAdmission(parsed.request, options.injection);
      outcomes.set(request, result.outcome);
      metrics.reviews.inc({ outcome: result.outcome, reason: result.reason });
      // request.log's line, through the server's logger (request.log is made on first use).
      const fields = {
        reqId: request.id,
        uid: parsed.request.uid,
        namespace: parsed.request.namespace,
        pod: podDisplayName(parsed.request),
        outcome: result.outcome,
        reason: result.reason,
        ...(result.election ? { election: result.election } : {}),
        ...(parsed.request.dryRun ? { dryRun: true } : {}),
      };
      // The line is written once the response is out ('close' follows 'finish', and comes on
      // an aborted connection too): the API server waits for the response, not for the line,
      // whose write wakes a libuv thread and the log reader, competing for the CPU the API
      // server needs to go on.
      reply.raw.once('close', () => {
        if (result.outcome === 'errored') log.warn({ ...fields, message: result.message }, 'review errored');
        else if (result.outcome === 'denied') log.info({ ...fields, message: result.message }, 'pod refused');
        else if (result.outcome === 'patched') log.info(fields, 'elector injected');
        else log.debug(fields, 'pod allowed');
      });
      // Written by hand (the same JSON): the patch is copied, not scanned by JSON.stringify.
      return reply.type(JSON_TYPE).send(encodeReview(result.review));
    });
  }
  return app;
}
