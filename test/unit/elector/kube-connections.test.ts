/**
 * The Kubernetes adapter reuses its TLS connection: requests one after the other (a list, a
 * Pod GET, a watch, the next watch) share one connection instead of a handshake each.
 */
import { KubeConfig } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { createServingCertificate } from '../../../common/pki.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inClusterAccess, jsonKubeconfigAccess, kubeConfigAccess } from '../../../elector/credentials.ts';
import { createKubeStore } from '../../../elector/kube.ts';

let server: Server;
let handshakes = 0;
const sockets = new Set<Socket>();
let kc: KubeConfig;
let caPem = '';
let serverUrl = '';

before(async () => {
  const { ca, serving } = await createServingCertificate(['127.0.0.1']);
  caPem = ca.certPem;
  server = createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      const url = new URL(req.url ?? '/', 'https://x');
      if (url.searchParams.get('watch') === 'true') {
        // A watch the server ends at once (as at its timeout), after one bookmark.
        res.end('{"type":"BOOKMARK","object":{"kind":"Lease","metadata":{"resourceVersion":"7"}}}\n');
      } else if (url.pathname.includes('/pods/')) {
        res.end(JSON.stringify({ metadata: { name: 'p', uid: 'u' }, status: { phase: 'Running' } }));
      } else {
        res.end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: [] }));
      }
    });
  });
  server.on('secureConnection', (s) => {
    handshakes++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  serverUrl = `https://127.0.0.1:${port}`;
  kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'c',
        server: `https://127.0.0.1:${port}`,
        caData: Buffer.from(ca.certPem).toString('base64'),
        skipTLSVerify: false,
      },
    ],
    users: [{ name: 'u', token: 'secret-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

for (const how of [
  'client-node KubeConfig',
  'own reader (JSON kubeconfig)',
  'own reader (in-cluster)',
] as const) {
  test(`sequential requests and watches share one TLS connection: ${how}`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'lifelease-sa-'));
    writeFileSync(path.join(dir, 'token'), 'secret-token');
    writeFileSync(path.join(dir, 'ca.crt'), caPem);
    const port = new URL(serverUrl).port;
    const access =
      how === 'client-node KubeConfig'
        ? kubeConfigAccess(kc, 'test')
        : how === 'own reader (in-cluster)'
          ? inClusterAccess({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, dir)
          : jsonKubeconfigAccess(
              JSON.stringify({
                'current-context': 'x',
                contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
                clusters: [{ name: 'c', cluster: { server: serverUrl, 'certificate-authority': 'ca.crt' } }],
                users: [{ name: 'u', user: { tokenFile: 'token' } }],
              }),
              path.join(dir, 'config'),
            )!;
    handshakes = 0;
    for (const s of sockets) s.destroy();
    const store = createKubeStore({ access, namespace: 'ns', election: 'app' });
    const signal = new AbortController().signal;
    const watch = () =>
      store.watch({ resourceVersion: '5', timeoutSeconds: 1, signal, onOpen: () => {}, onEvent: () => {} });
    await store.list(signal);
    await store.getPod('p', signal);
    await watch();
    await watch();
    await store.list(signal);
    assert.equal(handshakes, 1, `${handshakes} TLS handshakes for 5 requests`);
  });
}
