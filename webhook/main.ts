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
import { kubePodReader, loadKubeConfig, ownImage } from './kube.ts';
import { createMetrics } from './metrics.ts';
import { RbacReconciler } from './rbac-reconciler.ts';
import { buildServer } from './server.ts';
import { SelfManagedTls } from './self-managed-tls.ts';
import { CertificateReloader, secureContextOptions } from './tls.ts';
import { X509Certificate } from 'node:crypto';

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
// Asynchronous writes: a synchronous write to a full stdout pipe (a slow log reader) stalled
// the event loop, and with it every review in flight, for as long as the reader lagged.
const logDestination = pino.destination({ dest: 1, sync: false });
const log = pino(
  {
    level: config.logLevel,
    base: { component: 'webhook' },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  logDestination,
);
process.once('exit', () => {
  try {
    logDestination.flushSync();
  } catch {
    // The reader is gone or the pipe is full: nothing more can be written.
  }
});

async function main(): Promise<void> {
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
    image = await ownImage(kubePodReader(kc), {
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
    await selfTls.start();
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

  closeWithGrace({ delay: config.shutdownDelayMs + 15_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'webhook crashed');
    shuttingDown = true;
    if (signal && config.shutdownDelayMs > 0) {
      log.info({ signal, delayMs: config.shutdownDelayMs }, 'draining: not ready, still serving');
      await sleep(config.shutdownDelayMs);
    }
    reloader?.stop();
    selfTls?.stop();
    await reconciler?.stop();
    await probeApp?.close();
    await app.close();
    log.info({ signal }, 'webhook stopped');
  });

  await app.listen({ host: config.listen.host, port: config.listen.port });
  reloader?.start(app.server as unknown as TlsServer);
  // Rotated self-managed certificates go to new connections; open ones carry on.
  onSelfManagedCertificate = (pair) => {
    (app.server as unknown as TlsServer).setSecureContext(secureContextOptions(pair));
    metrics.certificateReloads.inc({ result: 'reloaded' });
    metrics.certificateExpiry.set(expiry(pair.cert).getTime() / 1000);
    log.info({ notAfter: expiry(pair.cert) }, 'serving certificate rotated');
  };
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
      certificateNotAfter: expiry(initial.cert),
      tls: selfTls ? 'self-managed' : 'files',
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
