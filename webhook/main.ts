/**
 * `webhook`: the composition root. `run()` is the only place that reads argv and the
 * environment (as given to it), creates the root logger, wires the parts, shuts down, and
 * picks exit codes:
 *   0  stopped by its signal, cleanly
 *   1  failed at start-up (TLS files, own-image lookup, listen), crashed, or shutdown overran
 *   2  invalid configuration (every problem printed)
 * Importing this module runs nothing; run as a program (`node webhook/main.ts`,
 * `dist/webhook.js`) it runs `run()` with the process's argv, env, streams and signals.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import closeWithGrace from 'close-with-grace';
import { X509Certificate } from 'node:crypto';
import { fstatSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import type { Server as TlsServer } from 'node:tls';
import pino from 'pino';
import { createLogger, type Logger, type LogStream } from '../common/logger.ts';
import pkg from '../package.json' with { type: 'json' };
import { sleep } from '../common/backoff.ts';
import { parseConfig, type WebhookConfig } from './config.ts';
import type { InjectionConfig } from './inject.ts';
import { kubePodReader, loadKubeConfig, ownImage } from './kube.ts';
import { createMetrics } from './metrics.ts';
import { RbacReconciler } from './rbac-reconciler.ts';
import { buildServer } from './server.ts';
import { SelfManagedTls } from './self-managed-tls.ts';
import { CertificateReloader, secureContextOptions } from './tls.ts';

/** What a command gets from its caller: the process's, or a test's. */
export interface RunOptions {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  stdout: Writable;
  stderr: Writable;
  /**
   * Aborting it shuts the command down. Its reason says why: a signal name (`SIGTERM`) is
   * a clean stop (exit 0, after the drain delay), an Error is a crash (exit 1, no drain).
   */
  signal: AbortSignal;
}

/** How long shutdown may take beyond the drain delay before `run` gives up with exit 1. */
const SHUTDOWN_GRACE_MS = 15_000;

/** How long the last lines may take to reach a pipe's reader at exit. */
const FLUSH_MS = 2000;

/** True when the process's stdout is a pipe or a socket (a container's stdout is a FIFO). */
function stdoutIsPipe(): boolean {
  try {
    const stat = fstatSync(1);
    return stat.isFIFO() || stat.isSocket();
  } catch {
    return false;
  }
}

/** The root logger, writing JSON lines to `stdout`. */
function rootLogger(config: WebhookConfig, stdout: Writable): { log: Logger; flush: () => Promise<void> } {
  // Never a synchronous write to a full pipe (a slow log reader): it stalled the event loop,
  // and with it every review in flight.
  //  - A pipe, as in a container: process.stdout itself, which Node opens non-blocking: each
  //    line is written at once from the event loop (one write(2)), what a full pipe cannot take
  //    waits in memory until it can. pino's asynchronous destination handed every line to a
  //    libuv worker thread and back, a thread hop per patched review.
  //  - Anything else (a file, a terminal): pino's asynchronous destination (only its writer is
  //    used, the lines are the common logger's, as the elector writes them).
  const pipe = stdout === process.stdout && stdoutIsPipe();
  const destination: LogStream & { flushSync?: () => void } =
    stdout === process.stdout && !pipe ? pino.destination({ dest: 1, sync: false }) : stdout;
  const log = createLogger({
    level: config.logLevel,
    stream: destination,
    base: { component: 'webhook' },
  });
  return {
    log,
    flush: async () => {
      if (pipe) {
        // Bounded: a reader that is gone or stuck must not hold the exit.
        const until = Date.now() + FLUSH_MS;
        while (stdout.writableLength > 0 && !stdout.destroyed && Date.now() < until) await sleep(10);
        return;
      }
      try {
        destination.flushSync?.();
      } catch {
        // The reader is gone or the pipe is full: nothing more can be written.
      }
    },
  };
}

/** Runs the webhook until `options.signal` aborts; resolves with the exit code. */
export async function run(options: RunOptions): Promise<number> {
  const parsed = parseConfig({ argv: [...options.argv], env: options.env });
  if (parsed.kind === 'help') {
    options.stdout.write(`${parsed.text}\n`);
    return 0;
  }
  if (parsed.kind === 'invalid') {
    options.stderr.write(
      `webhook: invalid configuration:\n${parsed.problems.map((p) => `  - ${p}`).join('\n')}\n`,
    );
    return 2;
  }
  const config = parsed.config;
  const { log, flush } = rootLogger(config, options.stdout);
  let webhook: Started;
  try {
    webhook = await start(config, log, options.signal);
  } catch (err) {
    log.fatal({ err }, 'webhook failed to start');
    await flush();
    return 1;
  }
  const reason: unknown = options.signal.aborted
    ? options.signal.reason
    : await new Promise((resolve) =>
        options.signal.addEventListener('abort', () => resolve(options.signal.reason), { once: true }),
      );
  const crashed = reason instanceof Error;
  if (crashed) log.error({ err: reason }, 'webhook crashed');
  const signal = crashed ? undefined : String(reason);
  const overrun = new AbortController();
  const outcome = await Promise.race([
    webhook.stop(signal, crashed ? 0 : config.shutdownDelayMs).then(
      () => 'stopped' as const,
      (err: unknown) => (log.error({ err }, 'webhook shutdown failed'), 'failed' as const),
    ),
    sleep(config.shutdownDelayMs + SHUTDOWN_GRACE_MS, { signal: overrun.signal }).then(
      () => 'overran' as const,
      () => 'stopped' as const,
    ),
  ]);
  overrun.abort();
  if (outcome === 'overran') log.error({ signal }, 'webhook did not stop in time');
  else log.info({ signal }, 'webhook stopped');
  await flush();
  return crashed || outcome !== 'stopped' ? 1 : 0;
}

interface Started {
  /** Not ready at once; after `drainMs` stops serving and every controller. */
  stop(signal: string | undefined, drainMs: number): Promise<void>;
}

/** Builds and starts every part; throws when one cannot start. */
async function start(config: WebhookConfig, log: Logger, signal: AbortSignal): Promise<Started> {
  const metrics = createMetrics();
  let shuttingDown = false;
  let selfTls: SelfManagedTls | undefined;
  const readiness = () => {
    if (shuttingDown) return { ready: false, reason: 'shutting down' };
    if (selfTls && !selfTls.ready)
      return { ready: false, reason: 'the caBundle does not trust our certificate yet' };
    return { ready: true };
  };

  // 1. Kubernetes client: for the RBAC reconciler, the own-image lookup and self-managed TLS;
  //    never on the admission path.
  let kc: KubeConfig | undefined;
  if (config.reconcileRbac || config.electorImage === undefined || config.selfManagedTls) {
    kc = loadKubeConfig(config.kubeconfig);
  }

  // 2. The image to inject: configured, or our own.
  let image = config.electorImage;
  if (image === undefined && kc && config.podName && config.podNamespace) {
    image = await ownImage(
      kubePodReader(kc),
      { name: config.podName, namespace: config.podNamespace, containerName: config.containerName },
      { signal },
    );
    log.info({ image }, 'elector image is the webhook own image');
  }
  if (image === undefined) throw new Error('no elector image');
  const injection: InjectionConfig = {
    image,
    command: config.electorCommand,
    argsPrefix: config.electorSubcommand,
    mode: config.electorMode,
    electionPort: config.electionPort,
    probePort: config.probePort,
    resources: config.electorResources,
    version: pkg.version,
  };

  // 3. TLS: self-managed (a Secret we keep, the caBundle kept in step), or files reloaded from disk.
  let serving: { cert: string; key: string } | undefined;
  let onSelfManagedCertificate: (pair: { cert: string; key: string }) => void = (pair) => {
    serving = pair;
  };
  if (config.selfManagedTls && kc) {
    const t = config.selfManagedTls;
    const svc = `${t.serviceName}.${t.namespace}.svc`;
    selfTls = new SelfManagedTls({
      kubeConfig: kc,
      namespace: t.namespace,
      secretName: t.secretName,
      webhookConfigurationName: t.webhookConfigurationName,
      policy: {
        caValidityMs: t.caValidityMs,
        servingValidityMs: t.servingValidityMs,
        renewFraction: 1 / 3,
        caPropagationMs: Math.min(5 * 60_000, t.servingValidityMs / 10),
        dnsNames: [svc, `${svc}.cluster.local`],
      },
      checkIntervalMs: Math.min(60_000, Math.max(1000, t.servingValidityMs / 30)),
      log: log.child({ component: 'tls' }),
      onCertificate: (pair) => onSelfManagedCertificate(pair),
    });
    await selfTls.start(signal);
  }
  const reloader = selfTls
    ? undefined
    : await CertificateReloader.load({
        certFile: config.tlsCertFile,
        keyFile: config.tlsPrivateKeyFile,
        intervalMs: config.tlsReloadIntervalMs,
        onResult: (r) => {
          if (r.kind === 'reloaded') {
            metrics.certificateReloads.inc({ result: 'reloaded' });
            metrics.certificateExpiry.set(r.pair.notAfter.getTime() / 1000);
            log.info(
              { notAfter: r.pair.notAfter, fingerprint: r.pair.fingerprint },
              'serving certificate reloaded',
            );
          } else if (r.kind === 'failed') {
            metrics.certificateReloads.inc({ result: 'failed' });
            log.warn(
              { err: r.error },
              'serving certificate changed but cannot be used yet; keeping the current one',
            );
          }
        },
      });
  const initial = serving ?? reloader?.current;
  if (!initial) throw new Error('no serving certificate');
  const expiry = (cert: string) => new Date(new X509Certificate(cert).validTo);
  metrics.certificateExpiry.set(expiry(initial.cert).getTime() / 1000);

  // 4. Servers.
  const app = buildServer({
    logger: log,
    injection,
    metrics,
    maxRequestBytes: config.maxRequestBytes,
    tls: secureContextOptions(initial),
    readiness,
  });
  const probeApp = config.metrics
    ? buildServer({
        logger: log,
        injection,
        metrics,
        maxRequestBytes: config.maxRequestBytes,
        readiness,
        admission: false,
      })
    : undefined;

  // 5. The RBAC reconciler, beside the admission path (never blocking it).
  const reconciler =
    config.reconcileRbac && kc
      ? new RbacReconciler({
          kubeConfig: kc,
          logger: log.child({ component: 'rbac' }),
          metrics,
          ...(config.rbacNamespace ? { namespace: config.rbacNamespace } : {}),
          egress: {
            mode: config.electorEgressPolicy,
            addresses: config.egressApiServerAddresses,
            ...(config.egressApiServerPort === undefined ? {} : { port: config.egressApiServerPort }),
          },
        })
      : undefined;

  const stop = async (signal: string | undefined, drainMs: number) => {
    shuttingDown = true;
    if (drainMs > 0) {
      log.info({ signal, delayMs: drainMs }, 'draining: not ready, still serving');
      await sleep(drainMs);
    }
    reloader?.stop();
    selfTls?.stop();
    await reconciler?.stop();
    await probeApp?.close();
    await app.close();
  };

  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
    reloader?.start(app.server as unknown as TlsServer);
    // Rotated self-managed certificates go to new connections; open ones carry on.
    onSelfManagedCertificate = (pair) => {
      (app.server as unknown as TlsServer).setSecureContext(secureContextOptions(pair));
      metrics.certificateReloads.inc({ result: 'reloaded' });
      metrics.certificateExpiry.set(expiry(pair.cert).getTime() / 1000);
      log.info({ notAfter: expiry(pair.cert) }, 'serving certificate rotated');
    };
    if (probeApp && config.metrics)
      await probeApp.listen({ host: config.metrics.host, port: config.metrics.port });
  } catch (err) {
    await stop(undefined, 0);
    throw err;
  }
  const address = app.server.address() as AddressInfo;
  const probeAddress = probeApp?.server.address() as AddressInfo | undefined;
  log.info(
    {
      address: `${address.address}:${address.port}`,
      ...(probeAddress ? { metricsAddress: `${probeAddress.address}:${probeAddress.port}` } : {}),
      version: pkg.version,
      image,
      mode: injection.mode,
      rbac: reconciler !== undefined,
      certificateNotAfter: expiry(initial.cert),
      tls: selfTls ? 'self-managed' : 'files',
    },
    'webhook listening',
  );
  if (reconciler) {
    reconciler.start().catch((e: unknown) => log.error({ err: e }, 'rbac reconciler failed to start'));
  }
  return { stop };
}

/**
 * Runs `run` for this process with `argv` (cli.ts and the program entry call it): the
 * process's environment and streams; SIGTERM/SIGINT stop it cleanly, an uncaught error stops
 * it as a crash (both through close-with-grace, which also exits 1 on a second signal); the
 * process exits with `run`'s code.
 */
export async function runProcess(argv: readonly string[]): Promise<never> {
  const stop = new AbortController();
  const done = run({
    argv,
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    signal: stop.signal,
  });
  // No delay of its own: `run` bounds the shutdown.
  closeWithGrace({ logger: false, delay: undefined }, async ({ signal, err }) => {
    stop.abort(err ?? signal ?? 'exit');
    const code = await done;
    if (code !== 0) process.exit(code);
  });
  process.exit(await done);
}

if (import.meta.main) await runProcess(process.argv.slice(2));
