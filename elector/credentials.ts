/**
 * Where the elector's requests go and with which credentials: a {@link KubeAccess}.
 *
 * The elector runs in every opted-in pod, so what it loads is paid for in every pod. The
 * common cases are read here on node:fs and node:https alone: in a pod, the service account
 * (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted CA, and the mounted token, read again on
 * every request since the kubelet rotates it); elsewhere a kubeconfig in JSON with a token or
 * a client certificate. Everything else a kubeconfig may hold (YAML, exec plugins, auth
 * providers, proxies, several files in KUBECONFIG) is left to @kubernetes/client-node's
 * `KubeConfig`, loaded only then: importing it costs about 40 MiB of RSS (README, "Why
 * the elector has its own small Kubernetes client").
 *
 * Precedence as in client-go and client-node's `loadFromDefault`: `KUBECONFIG`, then
 * `~/.kube/config`, then the in-cluster service account.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { RequestOptions } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import { homedir } from 'node:os';
import path from 'node:path';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type HeaderedOptions = RequestOptions & { headers: Record<string, string> };

/** The API server and how to authenticate to it. */
export interface KubeAccess {
  /** `https://host:port` (no trailing slash). */
  readonly server: string;
  /** Where the credentials came from, for the start-up log. */
  readonly source: string;
  /** Adds the TLS settings, a keep-alive agent and the Authorization header to `options`. */
  apply(options: HeaderedOptions): Promise<void>;
}

/**
 * One keep-alive agent per access: requests one after the other (a list, a Pod GET, the next
 * watch) reuse one TLS connection instead of a handshake each. Idle sockets close after a
 * minute, before kube-apiserver's own idle timeout (90 s).
 */
function keepAliveAgent(tls: AgentOptions): HttpsAgent {
  return new HttpsAgent({ ...tls, keepAlive: true, timeout: 60_000, maxFreeSockets: 2 });
}

/** In a pod: the service account's token and CA, the API server from the kubelet's env. */
export function inClusterAccess(
  env: Readonly<Record<string, string | undefined>>,
  dir = SERVICE_ACCOUNT_DIR,
): KubeAccess {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (!host || !port) throw new Error('KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set');
  const tokenFile = path.join(dir, 'token');
  const ca = readFileSync(path.join(dir, 'ca.crt'));
  readFileSync(tokenFile); // fail at start, not at the first request
  const agent = keepAliveAgent({ ca });
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return {
    server,
    source: `in-cluster service account (${dir})`,
    apply(options) {
      options.agent = agent;
      options.headers['Authorization'] = `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`;
      return Promise.resolve();
    },
  };
}

interface KubeconfigJson {
  'current-context'?: string;
  contexts?: { name?: string; context?: { cluster?: string; user?: string } }[];
  clusters?: { name?: string; cluster?: Record<string, unknown> }[];
  users?: { name?: string; user?: Record<string, unknown> }[];
}

/** Fields of a kubeconfig's cluster and user that this reader understands. */
const CLUSTER_FIELDS = new Set([
  'server',
  'certificate-authority',
  'certificate-authority-data',
  'insecure-skip-tls-verify',
  'tls-server-name',
]);
const USER_FIELDS = new Set([
  'token',
  'tokenFile',
  'client-certificate',
  'client-certificate-data',
  'client-key',
  'client-key-data',
]);

/**
 * A kubeconfig in JSON with the common fields only, or undefined when it needs more (then
 * client-node reads it). Relative file paths are relative to the kubeconfig's folder.
 */
export function jsonKubeconfigAccess(text: string, file: string): KubeAccess | undefined {
  if (!text.trimStart().startsWith('{')) return undefined;
  let doc: KubeconfigJson;
  try {
    doc = JSON.parse(text) as KubeconfigJson;
  } catch {
    return undefined;
  }
  const context = doc.contexts?.find((c) => c.name === doc['current-context'])?.context;
  const cluster = doc.clusters?.find((c) => c.name === context?.cluster)?.cluster;
  const user = doc.users?.find((u) => u.name === context?.user)?.user ?? {};
  if (!cluster || typeof cluster['server'] !== 'string') return undefined;
  if (Object.keys(cluster).some((k) => !CLUSTER_FIELDS.has(k))) return undefined;
  if (Object.keys(user).some((k) => !USER_FIELDS.has(k))) return undefined;
  const dir = path.dirname(file);
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const material = (data: unknown, name: unknown): Buffer | undefined => {
    const d = str(data);
    if (d !== undefined) return Buffer.from(d, 'base64');
    const f = str(name);
    return f === undefined ? undefined : readFileSync(path.resolve(dir, f));
  };
  const tls: AgentOptions = {};
  const ca = material(cluster['certificate-authority-data'], cluster['certificate-authority']);
  if (ca) tls.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) tls.rejectUnauthorized = false;
  const servername = str(cluster['tls-server-name']);
  if (servername) tls.servername = servername;
  const cert = material(user['client-certificate-data'], user['client-certificate']);
  const key = material(user['client-key-data'], user['client-key']);
  if (cert) tls.cert = cert;
  if (key) tls.key = key;
  const token = str(user['token']);
  const tokenFile = str(user['tokenFile']);
  const server = cluster['server'].replace(/\/$/, '');
  const agent = server.startsWith('https:') ? keepAliveAgent(tls) : undefined;
  return {
    server,
    source: `kubeconfig ${file}`,
    apply(options) {
      if (agent) options.agent = agent;
      const bearer =
        token ?? (tokenFile ? readFileSync(path.resolve(dir, tokenFile), 'utf8').trim() : undefined);
      if (bearer) options.headers['Authorization'] = `Bearer ${bearer}`;
      return Promise.resolve();
    },
  };
}

/** A client-node `KubeConfig` as a {@link KubeAccess} (exec plugins, proxies, YAML...). */
export function kubeConfigAccess(
  kc: {
    getCurrentCluster(): { server: string } | null;
    applyToHTTPSOptions(opts: RequestOptions): Promise<void>;
  },
  source: string,
): KubeAccess {
  const server = kc.getCurrentCluster()?.server?.replace(/\/$/, '');
  if (!server) throw new Error('the kubeconfig has no current cluster');
  // applyToHTTPSOptions makes a new https.Agent per request (a TCP connection and a TLS
  // handshake each); keep one per TLS identity instead. A proxy agent is left as it is; new
  // TLS material (a rotated client certificate) gets a new agent.
  const TLS_KEYS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername'] as const;
  let cached: { key: string; agent: HttpsAgent } | undefined;
  return {
    server,
    source,
    async apply(options) {
      await kc.applyToHTTPSOptions(options);
      const fresh = options.agent;
      if (!(fresh instanceof HttpsAgent) || fresh.constructor !== HttpsAgent) return;
      const tls: AgentOptions = {};
      for (const k of TLS_KEYS)
        if (fresh.options[k] !== undefined) Object.assign(tls, { [k]: fresh.options[k] });
      const key = JSON.stringify(TLS_KEYS.map((k) => tls[k] ?? null));
      if (cached?.key !== key) cached = { key, agent: keepAliveAgent(tls) };
      options.agent = cached.agent;
    },
  };
}

/** The credentials to use, in client-go's order; client-node is imported only when needed. */
export async function loadKubeAccess(
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<KubeAccess> {
  const files = (env['KUBECONFIG'] ?? '').split(path.delimiter).filter((f) => f !== '');
  const home = path.join(env['HOME'] ?? homedir(), '.kube', 'config');
  const file = files.length === 1 ? files[0]! : files.length === 0 && existsSync(home) ? home : undefined;
  if (file !== undefined) {
    const own = jsonKubeconfigAccess(readFileSync(file, 'utf8'), file);
    if (own) return own;
  }
  if (files.length === 0 && file === undefined && env['KUBERNETES_SERVICE_HOST']) {
    return inClusterAccess(env);
  }
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (file !== undefined) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kubeConfigAccess(kc, file ? `kubeconfig ${file}` : 'client-node defaults');
}
