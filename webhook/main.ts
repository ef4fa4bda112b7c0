/**
 * `webhook`: the composition root. The only place that reads argv and the environment,
 * creates the root logger, installs the shutdown, and picks exit codes:
 *   0  stopped by a signal, cleanly
 *   1  failed at start-up (TLS files, own-image lookup, listen) or crashed
 *   2  invalid configuration (every problem printed)
 */
import type { KubeConfig } from '@kubernetes/client-node';
import closeWithGrace from 'close-with-grace';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Server as TlsServer } from 'node:tls';
import pino from 'pino';
import pkg from '../package.json' with { type: 'json' };
import { parseConfig } from './config.ts';
import type { InjectionConfig } from './inject.ts';
import { loadKubeConfig, ownImage } from './kube.ts';
import { createMetrics } from './metrics.ts';
import { RbacReconciler } from './rbac-reconciler.ts';
import { buildServer } from './server.ts';
import { CertificateReloader, secureContextOptions } from './tls.ts';

const parsed = parseConfig({ argv: process.argv.slice(2), env: process.env });
if (parsed.kind === 'help') {
  process.stdout.write(`${parsed.text}\n`);
  process.exit(0);
}
if (parsed.kind === 'invalid') {
  process.stderr.write(
    `webhook: invalid configuration:\n${parsed.problems.map((p) => `  - ${p}`).join('\n')}\n`,
  );
  process.exit(2);
}
const config = parsed.config;
const log = pino({
  level: config.logLevel,
  base: { component: 'webhook' },
  timestamp: pino.stdTimeFunctions.isoTime,
});

async function main(): Promise<void> {
  const metrics = createMetrics();
  let shuttingDown = false;
  const readiness = () => (shuttingDown ? { ready: false, reason: 'shutting down' } : { ready: true });

  // 1. Kubernetes client: for the RBAC reconciler and the own-image lookup only.
  let kc: KubeConfig | undefined;
  if (config.reconcileRbac || config.electorImage === undefined) kc = loadKubeConfig(config.kubeconfig);

  // 2. The image to inject: configured, or our own.
  let image = config.electorImage;
  if (image === undefined && kc && config.podName && config.podNamespace) {
    image = await ownImage(kc, {
      name: config.podName,
      namespace: config.podNamespace,
      containerName: config.containerName,
    });
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

  // 3. TLS, reloaded from disk.
  const reloader = await CertificateReloader.load({
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
  metrics.certificateExpiry.set(reloader.current.notAfter.getTime() / 1000);

  // 4. Servers.
  const app = buildServer({
    logger: log,
    injection,
    metrics,
    maxRequestBytes: config.maxRequestBytes,
    tls: secureContextOptions(reloader.current),
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
        })
      : undefined;

  closeWithGrace({ delay: config.shutdownDelayMs + 15_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'webhook crashed');
    shuttingDown = true;
    if (signal && config.shutdownDelayMs > 0) {
      log.info({ signal, delayMs: config.shutdownDelayMs }, 'draining: not ready, still serving');
      await sleep(config.shutdownDelayMs);
    }
    reloader.stop();
    await reconciler?.stop();
    await probeApp?.close();
    await app.close();
    log.info({ signal }, 'webhook stopped');
  });

  await app.listen({ host: config.listen.host, port: config.listen.port });
  reloader.start(app.server as unknown as TlsServer);
  const address = app.server.address() as AddressInfo;
  if (probeApp && config.metrics)
    await probeApp.listen({ host: config.metrics.host, port: config.metrics.port });
  const probeAddress = probeApp?.server.address() as AddressInfo | undefined;
  log.info(
    {
      address: `${address.address}:${address.port}`,
      ...(probeAddress ? { metricsAddress: `${probeAddress.address}:${probeAddress.port}` } : {}),
      version: pkg.version,
      image,
      mode: injection.mode,
      rbac: reconciler !== undefined,
      certificateNotAfter: reloader.current.notAfter,
    },
    'webhook listening',
  );
  if (reconciler) {
    reconciler.start().catch((e: unknown) => log.error({ err: e }, 'rbac reconciler failed to start'));
  }
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'webhook failed to start');
  process.exit(1);
});
