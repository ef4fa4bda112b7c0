/**
 * The webhook's configuration: one pure parser of Kubernetes-style flags (`--tls-cert-file`)
 * and the same settings as `WEBHOOK_*` environment variables.
 *
 * Precedence: flag, then environment, then default. Defaults live only in {@link OPTIONS},
 * which also renders `--help` and the README's configuration table. Every problem is
 * reported at once, so a broken manifest is fixed in one round.
 */
import { isIP } from 'node:net';
import {
  DEFAULT_ELECTION_PORT,
  DEFAULT_PROBE_PORT,
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
} from '../common/constants.ts';
import {
  optionsTable as renderTable,
  parseAddress,
  parseDuration,
  readFlags,
  settingsReader,
  usageLines,
  type ListenAddress,
  type OptionSpec as FlagSpec,
  type ParseOutcome,
} from '../common/flags.ts';
import { EGRESS_POLICY_MODES, toCidr, type EgressPolicyMode } from './egress-policy.ts';

export type { ListenAddress };
export { parseAddress, parseDuration };

/** How the elector is added: a native sidecar (init container with `restartPolicy: Always`) or a plain container. */
export type ElectorMode = 'native-sidecar' | 'container';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

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

export type OptionKey =
  | 'selfManagedTls'
  | 'tlsSecretName'
  | 'webhookConfigurationName'
  | 'serviceName'
  | 'tlsCertValidity'
  | 'tlsCaValidity'
  | 'tlsCertFile'
  | 'tlsPrivateKeyFile'
  | 'tlsReloadInterval'
  | 'listenAddress'
  | 'metricsAddress'
  | 'electorImage'
  | 'electorCommand'
  | 'electorSubcommand'
  | 'electorMode'
  | 'electionPort'
  | 'probePort'
  | 'electorCpuRequest'
  | 'electorMemoryRequest'
  | 'electorCpuLimit'
  | 'electorMemoryLimit'
  | 'reconcileRbac'
  | 'rbacNamespace'
  | 'electorEgressPolicy'
  | 'egressApiServerAddresses'
  | 'egressApiServerPort'
  | 'kubeconfig'
  | 'maxRequestBytes'
  | 'shutdownDelay'
  | 'logLevel'
  | 'containerName';

export type OptionSpec = FlagSpec<OptionKey>;

/**
 * Why 7 MiB: kube-apiserver accepts objects up to about 1.5 MiB and request bodies up to
 * 3 MiB, and an AdmissionReview wraps the object (and, for updates, the old object) in JSON;
 * fastify's 1 MiB default would refuse large but legal pods. controller-runtime uses 7 MiB too.
 */
export const DEFAULT_MAX_REQUEST_BYTES = 7 * 1024 * 1024;

/** The webhook's settings; the single source of defaults (the README table is tested against it). */
export const OPTIONS: readonly OptionSpec[] = [
  {
    key: 'selfManagedTls',
    flag: '--self-managed-tls',
    env: 'WEBHOOK_SELF_MANAGED_TLS',
    default: 'false',
    boolean: true,
    description:
      "Make and rotate the CA and serving certificate in a Secret, and keep the MutatingWebhookConfiguration's caBundle in step (no cert-manager needed). Needs `POD_NAMESPACE`. Instead of the TLS file flags.",
  },
  {
    key: 'tlsSecretName',
    flag: '--tls-secret-name',
    env: 'WEBHOOK_TLS_SECRET_NAME',
    default: 'lifelease-webhook-tls',
    description: 'Self-managed TLS: the Secret (in the webhook namespace) that holds the CA and certificate.',
  },
  {
    key: 'webhookConfigurationName',
    flag: '--webhook-configuration-name',
    env: 'WEBHOOK_CONFIGURATION_NAME',
    default: 'lifelease',
    description: 'Self-managed TLS: the MutatingWebhookConfiguration whose caBundle is kept in step.',
  },
  {
    key: 'serviceName',
    flag: '--service-name',
    env: 'WEBHOOK_SERVICE_NAME',
    default: 'lifelease-webhook',
    description:
      'Self-managed TLS: the Service in front of the webhook; the certificate names `<service>.<namespace>.svc`.',
  },
  {
    key: 'tlsCertValidity',
    flag: '--tls-cert-validity',
    env: 'WEBHOOK_TLS_CERT_VALIDITY',
    default: '8760h',
    description: 'Self-managed TLS: serving certificate validity (renewed with a third left). 1m to 10y.',
  },
  {
    key: 'tlsCaValidity',
    flag: '--tls-ca-validity',
    env: 'WEBHOOK_TLS_CA_VALIDITY',
    default: '87600h',
    description:
      'Self-managed TLS: CA validity (rotated in two phases with a third left; the old CA stays trusted until it expires).',
  },
  {
    key: 'tlsCertFile',
    flag: '--tls-cert-file',
    env: 'WEBHOOK_TLS_CERT_FILE',
    default: '',
    defaultText: '(required unless `--self-managed-tls`)',
    description:
      'PEM serving certificate (with intermediates). Re-read periodically; a changed pair is used for new connections without a restart.',
  },
  {
    key: 'tlsPrivateKeyFile',
    flag: '--tls-private-key-file',
    env: 'WEBHOOK_TLS_PRIVATE_KEY_FILE',
    default: '',
    defaultText: '(required unless `--self-managed-tls`)',
    description: 'PEM private key of the serving certificate.',
  },
  {
    key: 'tlsReloadInterval',
    flag: '--tls-reload-interval',
    env: 'WEBHOOK_TLS_RELOAD_INTERVAL',
    default: '10s',
    description: 'How often the certificate and key files are checked for changes. 100ms to 1h.',
  },
  {
    key: 'listenAddress',
    flag: '--listen-address',
    env: 'WEBHOOK_LISTEN_ADDRESS',
    default: ':8443',
    description: 'HTTPS listener (TLS 1.2+): `POST /mutate`, `/healthz`, `/readyz`, `/metrics`.',
  },
  {
    key: 'metricsAddress',
    flag: '--metrics-address',
    env: 'WEBHOOK_METRICS_ADDRESS',
    default: '',
    defaultText: '(none: HTTPS listener only)',
    description: 'An extra plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`.',
  },
  {
    key: 'electorImage',
    flag: '--elector-image',
    env: 'WEBHOOK_ELECTOR_IMAGE',
    default: '',
    defaultText: "(the webhook's own image)",
    description: `Image of the injected elector. When unset, the webhook reads its own Pod (${ENV_POD_NAME}, ${ENV_POD_NAMESPACE}) at start-up and uses its container's image, so both always match.`,
  },
  {
    key: 'electorCommand',
    flag: '--elector-command',
    env: 'WEBHOOK_ELECTOR_COMMAND',
    default: '',
    defaultText: "(the image's entrypoint)",
    description:
      "The elector container's `command`, words separated by spaces; empty keeps the image's entrypoint.",
  },
  {
    key: 'electorSubcommand',
    flag: '--elector-subcommand',
    env: 'WEBHOOK_ELECTOR_SUBCOMMAND',
    default: 'elector',
    description:
      "Words put before the elector's flags in its `args` (our image's entrypoint runs `cli.js elector ...`); `-` for none.",
  },
  {
    key: 'electorMode',
    flag: '--elector-mode',
    env: 'WEBHOOK_ELECTOR_MODE',
    default: 'native-sidecar',
    description:
      '`native-sidecar` (an init container with `restartPolicy: Always`; apps start once the leader is known; Kubernetes 1.29+) or `container` (a plain container, for older clusters).',
  },
  {
    key: 'electionPort',
    flag: '--election-port',
    env: 'WEBHOOK_ELECTION_PORT',
    default: String(DEFAULT_ELECTION_PORT),
    description:
      'Default port of the election API on loopback; a pod may override it with `lifelease.dev/election-port`.',
  },
  {
    key: 'probePort',
    flag: '--probe-port',
    env: 'WEBHOOK_PROBE_PORT',
    default: String(DEFAULT_PROBE_PORT),
    description:
      "Default port of the elector's probes and metrics; a pod may override it with `lifelease.dev/probe-port`.",
  },
  {
    key: 'electorCpuRequest',
    flag: '--elector-cpu-request',
    env: 'WEBHOOK_ELECTOR_CPU_REQUEST',
    default: '10m',
    description: "The elector's CPU request (empty: none).",
  },
  {
    key: 'electorMemoryRequest',
    flag: '--elector-memory-request',
    env: 'WEBHOOK_ELECTOR_MEMORY_REQUEST',
    default: '48Mi',
    description: "The elector's memory request (empty: none).",
  },
  {
    key: 'electorCpuLimit',
    flag: '--elector-cpu-limit',
    env: 'WEBHOOK_ELECTOR_CPU_LIMIT',
    default: '250m',
    description: "The elector's CPU limit (empty: none; namespaces with a `limits.cpu` quota need one).",
  },
  {
    key: 'electorMemoryLimit',
    flag: '--elector-memory-limit',
    env: 'WEBHOOK_ELECTOR_MEMORY_LIMIT',
    default: '128Mi',
    description: "The elector's memory limit (empty: none).",
  },
  {
    key: 'reconcileRbac',
    flag: '--reconcile-rbac',
    env: 'WEBHOOK_RECONCILE_RBAC',
    default: 'true',
    boolean: true,
    description:
      "Grant each electing pod's ServiceAccount the elector's Role (a RoleBinding per election), and remove it once the election has no pods.",
  },
  {
    key: 'rbacNamespace',
    flag: '--rbac-namespace',
    env: 'WEBHOOK_RBAC_NAMESPACE',
    default: '',
    defaultText: '(all namespaces)',
    description: 'Restrict the RBAC reconciler to one namespace (then it needs its rights there only).',
  },
  {
    key: 'electorEgressPolicy',
    flag: '--elector-egress-policy',
    env: 'WEBHOOK_ELECTOR_EGRESS_POLICY',
    default: 'off',
    description:
      "A NetworkPolicy per election (beside its Role, removed with it) letting the election's pods reach the API server, and nothing else: `off`; `if-isolated` (only where another NetworkPolicy already restricts their egress: a default deny); `always` (where the default deny is not a namespaced NetworkPolicy; elsewhere it would restrict the pods to the API server). Needs the RBAC of `manifests/components/elector-egress`.",
  },
  {
    key: 'egressApiServerAddresses',
    flag: '--egress-api-server-addresses',
    env: 'WEBHOOK_EGRESS_API_SERVER_ADDRESSES',
    default: '',
    defaultText: '(the `kubernetes` EndpointSlice)',
    description:
      'API server IPs or CIDRs for those policies, comma-separated: the addresses pods reach after the `kubernetes` Service (its endpoints, not its cluster IP).',
  },
  {
    key: 'egressApiServerPort',
    flag: '--egress-api-server-port',
    env: 'WEBHOOK_EGRESS_API_SERVER_PORT',
    default: '',
    defaultText: '(the `kubernetes` EndpointSlice)',
    description:
      "API server port for those policies (the endpoints' port, e.g. 6443, not the Service's 443).",
  },
  {
    key: 'kubeconfig',
    flag: '--kubeconfig',
    env: 'WEBHOOK_KUBECONFIG',
    default: '',
    defaultText: '(in-cluster, or `$KUBECONFIG`)',
    description:
      'Kubeconfig for the RBAC reconciler and the own-image lookup. Never used on the admission path.',
  },
  {
    key: 'maxRequestBytes',
    flag: '--max-request-bytes',
    env: 'WEBHOOK_MAX_REQUEST_BYTES',
    default: '7Mi',
    description:
      "Largest accepted AdmissionReview body (bytes, or with a Ki/Mi suffix). Above the API server's object limit on purpose; larger bodies get 413.",
  },
  {
    key: 'shutdownDelay',
    flag: '--shutdown-delay',
    env: 'WEBHOOK_SHUTDOWN_DELAY',
    default: '5s',
    description:
      'On SIGTERM, report not ready and keep serving this long before closing, while the Service stops routing here. 0 to 5m.',
  },
  {
    key: 'logLevel',
    flag: '--log-level',
    env: 'WEBHOOK_LOG_LEVEL',
    default: 'info',
    description: '`trace`, `debug`, `info`, `warn`, `error`, `fatal` or `silent` (JSON lines on stdout).',
  },
  {
    key: 'containerName',
    flag: '--container-name',
    env: 'WEBHOOK_CONTAINER_NAME',
    default: 'webhook',
    description: "The webhook's container in its own Pod, whose image is the default elector image.",
  },
];

export type ParseResult = ParseOutcome<WebhookConfig>;

export interface ParseInput {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
}

const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const MODES: readonly ElectorMode[] = ['native-sidecar', 'container'];
/** Kubernetes resource quantities (the forms people write; exponents are rare and refused). */
const QUANTITY = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;

const QUANTITY_FACTORS: Readonly<Record<string, number>> = {
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** The value of a Kubernetes quantity (`128Mi` is 134217728, `1.5G` 1.5e9); undefined when invalid. */
export function quantityValue(text: string): number | undefined {
  const m = QUANTITY.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * (m[3] ? QUANTITY_FACTORS[m[3]]! : 1);
}

/** Parses a byte size: `1048576`, `512Ki`, `7Mi`; undefined when invalid. */
export function parseBytes(text: string): number | undefined {
  const trimmed = text.trim();
  return /^\d+(Ki|Mi|Gi)?$/.test(trimmed) ? quantityValue(trimmed) : undefined;
}

/** An option's default text (as documented), e.g. `defaultOf('electorMemoryLimit')` is `128Mi`. */
export function defaultOf(key: OptionKey): string {
  const option = OPTIONS.find((o) => o.key === key);
  if (!option) throw new Error(`no option ${key}`);
  return option.default;
}

/** Usage text, generated from {@link OPTIONS}. */
export function usage(): string {
  const lines = [
    'Usage: webhook (--tls-cert-file=<file> --tls-private-key-file=<file> | --self-managed-tls) [flags]',
    '',
    'Mutating admission webhook that injects the lifelease elector into pods with leaderElection: "true".',
    '',
    'Flags (each also as an environment variable):',
    ...usageLines(OPTIONS),
  ];
  return lines.join('\n');
}

/**
 * The README's configuration table (flag, environment variable, default, meaning), generated
 * from {@link OPTIONS} so the two cannot drift: the README embeds this text verbatim.
 */
export function optionsTable(): string {
  return renderTable(OPTIONS);
}

/**
 * Parses flags and environment into a complete configuration, or every problem found.
 * Pure: the caller passes argv and env.
 */
export function parseConfig(input: ParseInput): ParseResult {
  const problems: string[] = [];
  const { values: flagValues, help } = readFlags(input.argv, OPTIONS, problems);
  if (help) return { kind: 'help', text: usage() };
  const { raw, nameOf } = settingsReader(OPTIONS, flagValues, input.env);

  const required = (key: OptionKey): string => {
    const v = raw(key);
    if (v === '') problems.push(`${nameOf(key)} is required`);
    return v;
  };
  const duration = (key: OptionKey, minMs: number, maxMs: number): number => {
    const text = raw(key);
    const ms = parseDuration(text);
    if (ms === undefined) {
      problems.push(`${nameOf(key)}: "${text}" is not a duration (e.g. 500ms, 30s, 2m)`);
      return 0;
    }
    if (ms < minMs || ms > maxMs) problems.push(`${nameOf(key)}: ${text} is outside ${minMs}ms..${maxMs}ms`);
    return ms;
  };
  const address = (key: OptionKey, optional: boolean): ListenAddress | undefined => {
    const text = raw(key);
    if (text === '') {
      if (!optional) problems.push(`${nameOf(key)} must not be empty`);
      return undefined;
    }
    const parsed = parseAddress(text);
    if (typeof parsed === 'string') {
      problems.push(`${nameOf(key)}: ${parsed}`);
      return undefined;
    }
    return parsed;
  };
  const port = (key: OptionKey): number => {
    const text = raw(key);
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    // The elector runs as a non-root user without capabilities: it cannot bind below 1024.
    if (!(n >= 1024 && n <= 65535)) {
      problems.push(`${nameOf(key)}: "${text}" is not a port in 1024..65535`);
      return 0;
    }
    return n;
  };
  const quantity = (key: OptionKey): string => {
    const text = raw(key);
    if (text !== '' && !QUANTITY.test(text)) {
      problems.push(`${nameOf(key)}: "${text}" is not a Kubernetes quantity (e.g. 10m, 0.5, 64Mi)`);
    }
    return text;
  };
  const bool = (key: OptionKey): boolean => {
    const text = raw(key).toLowerCase();
    if (text === 'true' || text === '1') return true;
    if (text === 'false' || text === '0') return false;
    problems.push(`${nameOf(key)}: "${raw(key)}" is not true or false`);
    return false;
  };

  const selfManaged = bool('selfManagedTls');
  const tlsCertFile = selfManaged ? raw('tlsCertFile') : required('tlsCertFile');
  const tlsPrivateKeyFile = selfManaged ? raw('tlsPrivateKeyFile') : required('tlsPrivateKeyFile');
  let selfManagedTls: SelfManagedTlsConfig | undefined;
  if (selfManaged) {
    if (tlsCertFile !== '' || tlsPrivateKeyFile !== '') {
      problems.push(
        `${nameOf('selfManagedTls')} makes its own certificate: drop ${nameOf('tlsCertFile')} and ${nameOf('tlsPrivateKeyFile')}, or the self-managed flag`,
      );
    }
    const namespace = input.env[ENV_POD_NAMESPACE] ?? '';
    if (namespace === '') {
      problems.push(
        `${nameOf('selfManagedTls')} needs ${ENV_POD_NAMESPACE} (downward API metadata.namespace)`,
      );
    }
    const servingValidityMs = duration('tlsCertValidity', 60_000, 87_600 * 3_600_000);
    const caValidityMs = duration('tlsCaValidity', 60_000, 87_600 * 3_600_000 * 10);
    if (caValidityMs !== 0 && servingValidityMs > caValidityMs) {
      problems.push(`${nameOf('tlsCaValidity')} must be at least ${nameOf('tlsCertValidity')}`);
    }
    const names: [OptionKey, string][] = (
      ['tlsSecretName', 'webhookConfigurationName', 'serviceName'] as const
    ).map((k) => [k, raw(k)]);
    for (const [k, v] of names) {
      if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(v))
        problems.push(`${nameOf(k)}: "${v}" is not a valid name`);
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
  const tlsReloadIntervalMs = duration('tlsReloadInterval', 100, 3_600_000);
  const listen = address('listenAddress', false);
  const metrics = address('metricsAddress', true);
  if (listen && metrics && listen.port === metrics.port && listen.port !== 0) {
    problems.push(`${nameOf('metricsAddress')} must use another port than ${nameOf('listenAddress')}`);
  }

  const imageText = raw('electorImage');
  if (/\s/.test(imageText)) problems.push(`${nameOf('electorImage')}: "${imageText}" contains whitespace`);
  const words = (key: OptionKey): string[] => {
    const text = raw(key);
    return text === '-' || text === '' ? [] : text.split(/\s+/);
  };
  const electorCommand = words('electorCommand');
  const electorSubcommand = words('electorSubcommand');

  const modeText = raw('electorMode');
  if (!MODES.includes(modeText as ElectorMode)) {
    problems.push(`${nameOf('electorMode')}: "${modeText}" is not one of ${MODES.join(', ')}`);
  }
  const electionPort = port('electionPort');
  const probePort = port('probePort');
  if (electionPort !== 0 && electionPort === probePort) {
    problems.push(
      `${nameOf('electionPort')} and ${nameOf('probePort')} must differ (both are ${electionPort})`,
    );
  }
  const electorResources: ElectorResources = {
    cpuRequest: quantity('electorCpuRequest'),
    memoryRequest: quantity('electorMemoryRequest'),
    cpuLimit: quantity('electorCpuLimit'),
    memoryLimit: quantity('electorMemoryLimit'),
  };

  const reconcileRbac = bool('reconcileRbac');
  const rbacNamespace = raw('rbacNamespace');
  if (rbacNamespace !== '' && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(rbacNamespace)) {
    problems.push(`${nameOf('rbacNamespace')}: "${rbacNamespace}" is not a namespace name`);
  }
  const egressText = raw('electorEgressPolicy');
  if (!EGRESS_POLICY_MODES.includes(egressText as EgressPolicyMode)) {
    problems.push(
      `${nameOf('electorEgressPolicy')}: "${egressText}" is not one of ${EGRESS_POLICY_MODES.join(', ')}`,
    );
  }
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
  const egressPortText = raw('egressApiServerPort');
  const egressPortNumber = Number(egressPortText);
  if (
    egressPortText !== '' &&
    !(/^\d+$/.test(egressPortText) && egressPortNumber >= 1 && egressPortNumber <= 65535)
  )
    problems.push(`${nameOf('egressApiServerPort')}: "${egressPortText}" is not a port in 1..65535`);
  const kubeconfig = raw('kubeconfig');
  const bytesText = raw('maxRequestBytes');
  const maxRequestBytes = parseBytes(bytesText);
  if (maxRequestBytes === undefined || maxRequestBytes < 1024 * 1024) {
    problems.push(
      `${nameOf('maxRequestBytes')}: "${bytesText}" must be a byte size of at least 1Mi (e.g. 7Mi)`,
    );
  }
  const shutdownDelayMs = duration('shutdownDelay', 0, 5 * 60_000);
  const levelText = raw('logLevel').toLowerCase();
  const logLevel = (levelText === 'warning' ? 'warn' : levelText) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`${nameOf('logLevel')}: "${levelText}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const containerName = raw('containerName');

  const podName = (input.env[ENV_POD_NAME] ?? '').trim();
  const podNamespace = (input.env[ENV_POD_NAMESPACE] ?? '').trim();
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
      electorMode: modeText as ElectorMode,
      electionPort,
      probePort,
      electorResources,
      reconcileRbac,
      rbacNamespace: rbacNamespace === '' ? undefined : rbacNamespace,
      electorEgressPolicy: egressText as EgressPolicyMode,
      egressApiServerAddresses: egressApiServerAddresses.map(toCidr),
      egressApiServerPort: egressPortText === '' ? undefined : egressPortNumber,
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
