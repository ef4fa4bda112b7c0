/**
 * What a test needs from a running control plane, given only its state folder: the admin
 * KubeConfig, fresh namespaces, and credentials for non-admin identities. Works for a
 * cluster this process started and for one another process started (`npm test` starts one
 * for the whole run; `npm run cluster:up` keeps one in `.cluster/`).
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadCertificateAuthority } from '../../../common/pki.ts';

export interface ClusterClient {
  /** Folder with `kubeconfig`, `ca.crt`, `ca.key` and the processes' logs. */
  readonly stateDir: string;
  /** `https://127.0.0.1:<port>` */
  readonly server: string;
  /** Admin (`system:masters`) credentials. */
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  /** The CA that signed the API server's certificate and client certificates. */
  readonly caCertPem: string;
  /**
   * Creates a namespace with a unique name (`<prefix>-<random>`) and waits for its
   * `default` ServiceAccount, without which the API server refuses pods.
   */
  createNamespace(prefix: string, labels?: Record<string, string>): Promise<string>;
  /** Writes a kubeconfig that authenticates as the ServiceAccount with a fresh bound token. */
  serviceAccountKubeconfig(
    namespace: string,
    serviceAccount: string,
    expirationSeconds?: number,
  ): Promise<string>;
  /** Writes a kubeconfig that authenticates as `user` in `groups` with a client certificate. */
  clientCertKubeconfig(user: string, groups?: string[]): Promise<string>;
}

interface KubeconfigDoc {
  clusters: { cluster: { server: string } }[];
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

function kubeconfigFor(
  server: string,
  caCertPem: string,
  userName: string,
  user: Record<string, string>,
): string {
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'local', cluster: { server, 'certificate-authority-data': b64(caCertPem) } }],
      users: [{ name: userName, user }],
      contexts: [{ name: 'local', context: { cluster: 'local', user: userName } }],
      'current-context': 'local',
    },
    null,
    2,
  );
}

function safeFileName(s: string): string {
  return s.replace(/[^a-zA-Z0-9._-]/g, '_');
}

export async function connectCluster(stateDir: string): Promise<ClusterClient> {
  const kubeconfigPath = path.join(stateDir, 'kubeconfig');
  const [kubeconfigText, caCertPem] = await Promise.all([
    readFile(kubeconfigPath, 'utf8'),
    readFile(path.join(stateDir, 'ca.crt'), 'utf8'),
  ]);
  const server = (JSON.parse(kubeconfigText) as KubeconfigDoc).clusters[0]!.cluster.server;
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(kubeconfigText);
  const core = kubeConfig.makeApiClient(CoreV1Api);

  return {
    stateDir,
    server,
    kubeConfig,
    kubeconfigPath,
    caCertPem,

    async createNamespace(prefix, labels = {}) {
      const name = `${prefix}-${randomBytes(3).toString('hex')}`;
      await core.createNamespace({ body: { metadata: { name, labels } } });
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          await core.readNamespacedServiceAccount({ name: 'default', namespace: name });
          return name;
        } catch (err) {
          if ((err as { code?: number }).code !== 404 || Date.now() > deadline) throw err;
          await sleep(50);
        }
      }
    },

    async serviceAccountKubeconfig(namespace, serviceAccount, expirationSeconds = 3600) {
      const res = await core.createNamespacedServiceAccountToken({
        name: serviceAccount,
        namespace,
        body: { spec: { audiences: [], expirationSeconds } },
      });
      const token = res.status?.token;
      if (!token) throw new Error(`no token issued for ${namespace}/${serviceAccount}`);
      const file = path.join(
        stateDir,
        `sa-${safeFileName(namespace)}-${safeFileName(serviceAccount)}.kubeconfig`,
      );
      await writeFile(file, kubeconfigFor(server, caCertPem, serviceAccount, { token }), { mode: 0o600 });
      return file;
    },

    async clientCertKubeconfig(user, groups = []) {
      const ca = await loadCertificateAuthority(
        caCertPem,
        await readFile(path.join(stateDir, 'ca.key'), 'utf8'),
      );
      const cert = await ca.issue({ commonName: user, organizations: groups, usage: 'client' });
      const file = path.join(stateDir, `user-${safeFileName(user)}.kubeconfig`);
      await writeFile(
        file,
        kubeconfigFor(server, caCertPem, user, {
          'client-certificate-data': b64(cert.certPem),
          'client-key-data': b64(cert.keyPem),
        }),
        { mode: 0o600 },
      );
      return file;
    },
  };
}
