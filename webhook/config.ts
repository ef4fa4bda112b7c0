/**
 * The webhook's configuration: one pure parser of Kubernetes-style flags (`--tls-cert-file`)
 * and the same settings as `WEBHOOK_*` environment variables.
 *
 * Precedence: flag, then environment (a variable set to "" is unset), then default.
 * Options, their defaults and kinds are declared in options.ts; each option's own check is
 * done by `common/flags.ts` from its kind; this file keeps the rules that span several
 * options. Every problem is reported at once, so a broken manifest is fixed in one round.
 */
import { isIP } from 'node:net';
import { ENV_POD_NAME, ENV_POD_NAMESPACE } from '../common/constants.ts';
import {
  parseAddress,
  parseDuration,
  readFlags,
  settingsReader,
  typedSettings,
  type ListenAddress,
  type ParseOutcome,
} from '../common/flags.ts';
import { toCidr, type EgressPolicyMode } from './egress-policy.ts';
import { OPTIONS, usage, type ElectorMode, type LogLevel, type OptionKey } from './options.ts';

export type { ListenAddress };
export { parseAddress, parseDuration };
export { parseBytes, quantityValue } from '../common/flags.ts';
export {
  defaultOf,
  OPTIONS,
  optionsTable,
  usage,
  type ElectorMode,
  type LogLevel,
  type OptionKey,
  type OptionSpec,
} from './options.ts';

/** Requests and limits of the injected elector; an empty string leaves that value unset. */
export interface ElectorResources {
  cpuRequest: string;
  memoryRequest: string;
  cpuLimit: string;
  memoryLimit: string;
}

export interface WebhookConfig {
  /** Empty in self-managed mode. */
  tlsCertFile: string;
  tlsPrivateKeyFile: string;
  /** The webhook makes and rotates its own CA and certificate (see self-managed-tls.ts). */
  selfManagedTls: SelfManagedTlsConfig | undefined;
  /** How often the certificate files are re-read (a change is applied to new connections). */
  tlsReloadIntervalMs: number;
  listen: ListenAddress;
  /** A separate plain-HTTP listener for `/metrics` and probes, or undefined (HTTPS listener only). */
  metrics: ListenAddress | undefined;
  /** The image to inject; undefined means "the webhook's own image", resolved at start-up. */
  electorImage: string | undefined;
  /** The elector container's `command`; empty means the image's entrypoint. */
  electorCommand: string[];
  /** Words before the elector's flags in `args` (the image's entrypoint dispatches on them). */
  electorSubcommand: string[];
  electorMode: ElectorMode;
  /** Cluster-wide default ports; pods may override them with annotations. */
  electionPort: number;
  probePort: number;
  electorResources: ElectorResources;
  /** Run the RBAC reconciler (grants each electing pod's ServiceAccount the elector's Role). */
  reconcileRbac: boolean;
  /** Reconcile RBAC in this namespace only; undefined means all namespaces. */
  rbacNamespace: string | undefined;
  /** Egress NetworkPolicies to the API server per election (egress-policy.ts). */
  electorEgressPolicy: EgressPolicyMode;
  /** API server CIDRs for those policies; empty: from the `kubernetes` EndpointSlice. */
  egressApiServerAddresses: string[];
  /** API server port for those policies; undefined: from the `kubernetes` EndpointSlice. */
  egressApiServerPort: number | undefined;
  /** Path of a kubeconfig file; undefined means in-cluster config or `$KUBECONFIG`. */
  kubeconfig: string | undefined;
  /** Largest accepted request body, in bytes. */
  maxRequestBytes: number;
  /** On SIGTERM, report not-ready and keep serving this long before closing. */
  shutdownDelayMs: number;
  logLevel: LogLevel;
  /** This pod (downward API), used to find the webhook's own image. */
  podName: string | undefined;
  podNamespace: string | undefined;
  /** Name of the webhook's container in its pod (to find its image). */
  containerName: string;
}

/** Settings of self-managed TLS (`--self-managed-tls`). */
export interface SelfManagedTlsConfig {
  /** The Secret, in the webhook's own namespace, holding the CA and serving certificate. */
  secretName: string;
  /** The MutatingWebhookConfiguration whose caBundle is kept in step. */
  webhookConfigurationName: string;
  /** The webhook's Service; the certificate covers `<service>.<namespace>.svc` (and `.cluster.local`). */
  serviceName: string;
  namespace: string;
  servingValidityMs: number;
  caValidityMs: number;
}

export type ParseResult = ParseOutcome<WebhookConfig>;

export interface ParseInput {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
}

/** A Kubernetes object name (DNS subdomain). */
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * Parses flags and environment into a complete configuration, or every problem found.
 * Pure: the caller passes argv and env.
 */
export function parseConfig(input: ParseInput): ParseResult {
  const problems: string[] = [];
  const { values: flagValues, help } = readFlags(input.argv, OPTIONS, problems);
  if (help) return { kind: 'help', text: usage() };
  const settings = typedSettings(
    OPTIONS,
    settingsReader(OPTIONS, flagValues, input.env, { emptyEnvIsUnset: true }),
    problems,
  );
  const { raw, nameOf } = settings;
  const env = (name: string): string => (input.env[name] ?? '').trim();
  const required = (key: OptionKey): string => {
    const v = raw(key);
    if (v === '') problems.push(`${nameOf(key)} is required`);
    return v;
  };

  // TLS: files, or self-managed (then no files, and the pod's namespace for the Secret).
  const selfManaged = settings.bool('selfManagedTls');
  const tlsCertFile = selfManaged ? raw('tlsCertFile') : required('tlsCertFile');
  const tlsPrivateKeyFile = selfManaged ? raw('tlsPrivateKeyFile') : required('tlsPrivateKeyFile');
  let selfManagedTls: SelfManagedTlsConfig | undefined;
  if (selfManaged) {
    if (tlsCertFile !== '' || tlsPrivateKeyFile !== '') {
      problems.push(
        `${nameOf('selfManagedTls')} makes its own certificate: drop ${nameOf('tlsCertFile')} and ${nameOf('tlsPrivateKeyFile')}, or the self-managed flag`,
      );
    }
    const namespace = env(ENV_POD_NAMESPACE);
    if (namespace === '') {
      problems.push(
        `${nameOf('selfManagedTls')} needs ${ENV_POD_NAMESPACE} (downward API metadata.namespace)`,
      );
    }
    const servingValidityMs = settings.duration('tlsCertValidity');
    const caValidityMs = settings.duration('tlsCaValidity');
    if (caValidityMs !== 0 && servingValidityMs > caValidityMs) {
      problems.push(`${nameOf('tlsCaValidity')} must be at least ${nameOf('tlsCertValidity')}`);
    }
    for (const k of ['tlsSecretName', 'webhookConfigurationName', 'serviceName'] as const) {
      if (!NAME.test(raw(k))) problems.push(`${nameOf(k)}: "${raw(k)}" is not a valid name`);
    }
    selfManagedTls = {
      secretName: raw('tlsSecretName'),
      webhookConfigurationName: raw('webhookConfigurationName'),
      serviceName: raw('serviceName'),
      namespace,
      servingValidityMs,
      caValidityMs,
    };
  }
  const tlsReloadIntervalMs = settings.duration('tlsReloadInterval');

  // Listeners: two, on different ports.
  const listen = settings.address('listenAddress');
  const metrics = settings.address('metricsAddress');
  if (listen && metrics && listen.port === metrics.port && listen.port !== 0) {
    problems.push(`${nameOf('metricsAddress')} must use another port than ${nameOf('listenAddress')}`);
  }

  // The injected elector.
  const imageText = raw('electorImage');
  if (/\s/.test(imageText)) problems.push(`${nameOf('electorImage')}: "${imageText}" contains whitespace`);
  const words = (key: OptionKey): string[] => {
    const text = raw(key);
    return text === '-' || text === '' ? [] : text.split(/\s+/);
  };
  const electorCommand = words('electorCommand');
  const electorSubcommand = words('electorSubcommand');
  const electorMode = settings.choice<ElectorMode>('electorMode');
  const electionPort = settings.port('electionPort') ?? 0;
  const probePort = settings.port('probePort') ?? 0;
  if (electionPort !== 0 && electionPort === probePort) {
    problems.push(
      `${nameOf('electionPort')} and ${nameOf('probePort')} must differ (both are ${electionPort})`,
    );
  }
  const electorResources: ElectorResources = {
    cpuRequest: settings.quantity('electorCpuRequest'),
    memoryRequest: settings.quantity('electorMemoryRequest'),
    cpuLimit: settings.quantity('electorCpuLimit'),
    memoryLimit: settings.quantity('electorMemoryLimit'),
  };

  // RBAC and egress policies.
  const reconcileRbac = settings.bool('reconcileRbac');
  const rbacNamespace = raw('rbacNamespace');
  if (rbacNamespace !== '' && !NAMESPACE_NAME.test(rbacNamespace)) {
    problems.push(`${nameOf('rbacNamespace')}: "${rbacNamespace}" is not a namespace name`);
  }
  const electorEgressPolicy = settings.choice<EgressPolicyMode>('electorEgressPolicy');
  const egressApiServerAddresses = raw('egressApiServerAddresses')
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  for (const a of egressApiServerAddresses) {
    const [ip, bits, ...rest] = a.split('/');
    const isIp = isIP(ip ?? '') !== 0;
    const max = isIP(ip ?? '') === 6 ? 128 : 32;
    if (!isIp || rest.length > 0 || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max)))
      problems.push(`${nameOf('egressApiServerAddresses')}: "${a}" is not an IP address or CIDR`);
  }
  const egressApiServerPort = settings.port('egressApiServerPort');

  // The rest.
  const kubeconfig = raw('kubeconfig');
  const maxRequestBytes = settings.bytes('maxRequestBytes');
  const shutdownDelayMs = settings.duration('shutdownDelay');
  const logLevel = settings.choice<LogLevel>('logLevel');
  const containerName = raw('containerName');

  // The image: configured, or our own (found through the downward API).
  const podName = env(ENV_POD_NAME);
  const podNamespace = env(ENV_POD_NAMESPACE);
  if (imageText === '' && (podName === '' || podNamespace === '')) {
    problems.push(
      `${nameOf('electorImage')} is not set, and the webhook cannot find its own image: set it, or set ${ENV_POD_NAME} and ${ENV_POD_NAMESPACE} from the downward API`,
    );
  }

  if (problems.length > 0 || !listen || maxRequestBytes === undefined) return { kind: 'invalid', problems };
  return {
    kind: 'ok',
    config: {
      tlsCertFile,
      selfManagedTls,
      tlsPrivateKeyFile,
      tlsReloadIntervalMs,
      listen,
      metrics,
      electorImage: imageText === '' ? undefined : imageText,
      electorCommand,
      electorSubcommand,
      electorMode,
      electionPort,
      probePort,
      electorResources,
      reconcileRbac,
      rbacNamespace: rbacNamespace === '' ? undefined : rbacNamespace,
      electorEgressPolicy,
      egressApiServerAddresses: egressApiServerAddresses.map(toCidr),
      egressApiServerPort,
      kubeconfig: kubeconfig === '' ? undefined : kubeconfig,
      maxRequestBytes,
      shutdownDelayMs,
      logLevel,
      podName: podName === '' ? undefined : podName,
      podNamespace: podNamespace === '' ? undefined : podNamespace,
      containerName,
    },
  };
}
