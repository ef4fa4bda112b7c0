/** The webhook's configuration parser: flags, env, defaults, and every problem at once. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  defaultOf,
  OPTIONS,
  optionsTable,
  parseBytes,
  quantityValue,
  parseConfig,
  usage,
  type WebhookConfig,
} from '../../../webhook/config.ts';

const BASE_ARGS = [
  '--tls-cert-file=/tls/tls.crt',
  '--tls-private-key-file=/tls/tls.key',
  '--elector-image=img:1',
];

function ok(argv: string[], env: Record<string, string> = {}): WebhookConfig {
  const r = parseConfig({ argv, env });
  assert.equal(r.kind, 'ok', JSON.stringify(r));
  if (r.kind !== 'ok') throw new Error('unreachable');
  return r.config;
}

function problems(argv: string[], env: Record<string, string> = {}): string[] {
  const r = parseConfig({ argv, env });
  assert.equal(r.kind, 'invalid', JSON.stringify(r));
  return r.kind === 'invalid' ? r.problems : [];
}

describe('webhook config', () => {
  test('defaults', () => {
    const c = ok(BASE_ARGS);
    assert.deepEqual(c, {
      tlsCertFile: '/tls/tls.crt',
      tlsPrivateKeyFile: '/tls/tls.key',
      selfManagedTls: undefined,
      tlsReloadIntervalMs: 10_000,
      listen: { host: '0.0.0.0', port: 8443 },
      metrics: undefined,
      electorImage: 'img:1',
      electorCommand: [],
      electorSubcommand: ['elector'],
      electorMode: 'native-sidecar',
      electionPort: 4040,
      probePort: 4041,
      electorResources: { cpuRequest: '10m', memoryRequest: '48Mi', cpuLimit: '250m', memoryLimit: '128Mi' },
      reconcileRbac: true,
      rbacNamespace: undefined,
      electorEgressPolicy: 'off',
      egressApiServerAddresses: [],
      egressApiServerPort: undefined,
      kubeconfig: undefined,
      maxRequestBytes: 7 * 1024 * 1024,
      shutdownDelayMs: 5000,
      logLevel: 'info',
      podName: undefined,
      podNamespace: undefined,
      containerName: 'webhook',
    } satisfies WebhookConfig);
  });

  test('self-managed TLS replaces the file flags and takes its namespace from POD_NAMESPACE', () => {
    const c = ok(['--self-managed-tls', '--elector-image=img:1', '--tls-cert-validity=2h'], {
      POD_NAMESPACE: 'lifelease-system',
    });
    assert.deepEqual(c.selfManagedTls, {
      secretName: 'lifelease-webhook-tls',
      webhookConfigurationName: 'lifelease',
      serviceName: 'lifelease-webhook',
      namespace: 'lifelease-system',
      servingValidityMs: 2 * 3_600_000,
      caValidityMs: 87_600 * 3_600_000,
    });
    assert.equal(c.tlsCertFile, '');
  });

  test('self-managed TLS: every problem at once', () => {
    const found = problems([
      '--self-managed-tls=true',
      '--tls-cert-file=/a',
      '--tls-cert-validity=10y',
      '--tls-ca-validity=1h',
      '--tls-secret-name=Not_Valid',
    ]);
    assert.ok(found.some((p) => p.includes('drop --tls-cert-file')));
    assert.ok(found.some((p) => p.includes('needs POD_NAMESPACE')));
    assert.ok(found.some((p) => p.includes('--tls-cert-validity') && p.includes('not a duration')));
    assert.ok(found.some((p) => p.includes('"Not_Valid" is not a valid name')));
  });

  test('without self-managed TLS, the file flags are required', () => {
    const found = problems(['--elector-image=img:1']);
    assert.ok(found.some((p) => p.startsWith('--tls-cert-file (WEBHOOK_TLS_CERT_FILE) is required')));
    assert.ok(
      found.some((p) => p.startsWith('--tls-private-key-file (WEBHOOK_TLS_PRIVATE_KEY_FILE) is required')),
    );
  });

  test('env names every setting, and flags win over env', () => {
    const env = {
      WEBHOOK_TLS_CERT_FILE: '/e/c',
      WEBHOOK_TLS_PRIVATE_KEY_FILE: '/e/k',
      WEBHOOK_ELECTOR_IMAGE: 'env:1',
      WEBHOOK_LISTEN_ADDRESS: '127.0.0.1:9443',
      WEBHOOK_METRICS_ADDRESS: ':9090',
      WEBHOOK_ELECTOR_MODE: 'container',
      WEBHOOK_ELECTOR_CPU_LIMIT: '',
      WEBHOOK_RECONCILE_RBAC: 'false',
      WEBHOOK_MAX_REQUEST_BYTES: '2Mi',
      WEBHOOK_ELECTOR_COMMAND: 'node /app/dist/elector.js',
    };
    const c = ok(['--elector-image', 'flag:2'], env);
    assert.equal(c.tlsCertFile, '/e/c');
    assert.equal(c.electorImage, 'flag:2');
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 9443 });
    assert.deepEqual(c.metrics, { host: '0.0.0.0', port: 9090 });
    assert.equal(c.electorMode, 'container');
    // An empty variable is unset (the one rule of both commands): the default applies; an
    // empty flag is the value "none".
    assert.equal(c.electorResources.cpuLimit, '250m');
    assert.equal(ok(['--elector-cpu-limit='], env).electorResources.cpuLimit, '');
    assert.equal(c.reconcileRbac, false);
    assert.equal(c.maxRequestBytes, 2 * 1024 * 1024);
    assert.deepEqual(c.electorCommand, ['node', '/app/dist/elector.js']);
  });

  test('egress policy: mode, API server addresses (IPs become /32 or /128) and port', () => {
    const c = ok([
      ...BASE_ARGS,
      '--elector-egress-policy=if-isolated',
      '--egress-api-server-addresses=10.0.0.1, 192.168.0.0/24,fd00::1',
      '--egress-api-server-port=6443',
    ]);
    assert.equal(c.electorEgressPolicy, 'if-isolated');
    assert.deepEqual(c.egressApiServerAddresses, ['10.0.0.1/32', '192.168.0.0/24', 'fd00::1/128']);
    assert.equal(c.egressApiServerPort, 6443);
    const p = problems([
      ...BASE_ARGS,
      '--elector-egress-policy=yes',
      '--egress-api-server-addresses=10.0.0.1/33,api.example,10.0.0.2/8/1',
      '--egress-api-server-port=0',
    ]).join('\n');
    assert.match(
      p,
      /--elector-egress-policy \(WEBHOOK_ELECTOR_EGRESS_POLICY\): "yes" is not one of off, if-isolated, always/,
    );
    assert.match(p, /"10\.0\.0\.1\/33" is not an IP address or CIDR/);
    assert.match(p, /"api\.example" is not an IP address or CIDR/);
    assert.match(p, /"10\.0\.0\.2\/8\/1" is not an IP address or CIDR/);
    assert.match(p, /--egress-api-server-port \(WEBHOOK_EGRESS_API_SERVER_PORT\): "0" is not a port/);
  });

  test('a boolean flag alone means true; "-" leaves the command unset', () => {
    const c = ok([...BASE_ARGS, '--reconcile-rbac', '--elector-command=-'], {
      WEBHOOK_RECONCILE_RBAC: 'false',
    });
    assert.equal(c.reconcileRbac, true);
    assert.deepEqual(c.electorCommand, []);
  });

  test('no elector image: the own pod is looked up when the downward API names it', () => {
    const c = ok(BASE_ARGS.slice(0, 2), { POD_NAME: 'webhook-abc', POD_NAMESPACE: 'lifelease-system' });
    assert.equal(c.electorImage, undefined);
    assert.equal(c.podName, 'webhook-abc');
    assert.match(problems(BASE_ARGS.slice(0, 2)).join('\n'), /--elector-image.*cannot find its own image/);
  });

  test('every problem is reported at once', () => {
    const p = problems([
      '--listen-address=nope',
      '--elector-mode=sidecar',
      '--election-port=80',
      '--probe-port=abc',
      '--elector-cpu-request=ten',
      '--max-request-bytes=512Ki',
      '--shutdown-delay=forever',
      '--log-level=loud',
      '--reconcile-rbac=maybe',
      '--bogus=1',
      'stray',
    ]);
    const text = p.join('\n');
    for (const expected of [
      /--tls-cert-file \(WEBHOOK_TLS_CERT_FILE\) is required/,
      /--tls-private-key-file .* is required/,
      /--listen-address .*"nope" is not host:port/,
      /--elector-mode .*"sidecar" is not one of native-sidecar, container/,
      /--election-port .*"80" is not a port in 1024..65535/,
      /--probe-port .*"abc"/,
      /--elector-cpu-request .*"ten" is not a Kubernetes quantity/,
      /--max-request-bytes .*at least 1Mi/,
      /--shutdown-delay .*"forever" is not a duration/,
      /--log-level .*"loud"/,
      /--reconcile-rbac .*"maybe" is not true or false/,
      /unknown flag --bogus/,
      /unexpected argument "stray"/,
      /--elector-image .* is not set/,
    ]) {
      assert.match(text, expected);
    }
    assert.equal(p.length, 14, text);
  });

  test('equal ports and a metrics port equal to the listen port are refused', () => {
    const p = problems([
      ...BASE_ARGS,
      '--election-port=5000',
      '--probe-port=5000',
      '--metrics-address=:8443',
    ]).join('\n');
    assert.match(p, /must differ/);
    assert.match(p, /another port/);
  });

  test('a flag needing a value', () => {
    assert.match(problems([...BASE_ARGS, '--listen-address']).join('\n'), /--listen-address needs a value/);
  });

  test('--help', () => {
    const r = parseConfig({ argv: ['--help'], env: {} });
    assert.equal(r.kind, 'help');
    if (r.kind === 'help')
      for (const o of OPTIONS) assert.ok(r.text.includes(o.flag) && r.text.includes(o.env));
    assert.equal(usage(), (r as { text: string }).text);
  });

  test('every option has a WEBHOOK_ env name, a kebab-case flag and a description', () => {
    for (const o of OPTIONS) {
      assert.match(o.flag, /^--[a-z][a-z-]+$/);
      assert.match(o.env, /^WEBHOOK_[A-Z_]+$/);
      assert.ok(o.description.length > 10);
    }
    assert.equal(new Set(OPTIONS.map((o) => o.env)).size, OPTIONS.length);
  });

  test('the README table has one row per option, with its default', () => {
    const rows = optionsTable().split('\n').slice(2);
    assert.equal(rows.length, OPTIONS.length);
    assert.match(optionsTable(), /\| `--elector-mode` \| `WEBHOOK_ELECTOR_MODE` \| `native-sidecar` \|/);
    assert.match(
      optionsTable(),
      /\| `--tls-cert-file` \| `WEBHOOK_TLS_CERT_FILE` \| \(required unless `--self-managed-tls`\) \|/,
    );
    for (const row of rows) assert.equal(row.split(' | ').length, 4, row);
  });

  test('parseBytes', () => {
    assert.equal(parseBytes('1024'), 1024);
    assert.equal(parseBytes('3Ki'), 3072);
    assert.equal(parseBytes('7Mi'), 7 * 1024 * 1024);
    assert.equal(parseBytes('7MB'), undefined);
  });

  test('quantityValue: binary and decimal suffixes, milli, invalid forms', () => {
    assert.equal(quantityValue('128Mi'), 128 * 2 ** 20);
    assert.equal(quantityValue('1.5G'), 1.5e9);
    assert.equal(quantityValue('.5Gi'), 2 ** 29);
    assert.equal(quantityValue('500m'), 0.5);
    assert.equal(quantityValue('64'), 64);
    for (const bad of ['', '128MB', '1e3', '-1Mi', 'Mi', '12 Mi'])
      assert.equal(quantityValue(bad), undefined, bad);
  });

  test('defaultOf gives the documented default and refuses an unknown key', () => {
    assert.equal(defaultOf('electorMemoryLimit'), '128Mi');
    assert.throws(() => defaultOf('nope' as never), /no option nope/);
  });
});
