import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  OPTIONS,
  parseAddress,
  parseConfig,
  parseDuration,
  type ElectorConfig,
} from '../../../elector/config.ts';

const POD = { POD_NAME: 'app-0', POD_NAMESPACE: 'team', POD_UID: 'uid-0', HOSTNAME: 'app-0' };

function ok(argv: string[], env: Record<string, string> = POD): ElectorConfig {
  const r = parseConfig({ argv, env, systemHostname: 'sys-host' });
  assert.equal(r.kind, 'ok', r.kind === 'invalid' ? r.problems.join('; ') : r.kind);
  return (r as { config: ElectorConfig }).config;
}

function problems(argv: string[], env: Record<string, string>): string[] {
  const r = parseConfig({ argv, env, systemHostname: 'sys-host' });
  assert.equal(r.kind, 'invalid');
  return (r as { problems: string[] }).problems;
}

describe('parseConfig', () => {
  test('defaults: NAIS ports, both loopbacks, probes on all interfaces, pod namespace', () => {
    const c = ok(['--election=app']);
    assert.deepEqual(c.http, [
      { host: '127.0.0.1', port: 4040 },
      { host: '::1', port: 4040 },
    ]);
    assert.deepEqual(c.probe, { host: '0.0.0.0', port: 4041 });
    assert.equal(c.metrics, undefined);
    assert.equal(c.namespace, 'team');
    assert.equal(c.logFormat, 'json');
    assert.equal(c.logLevel, 'info');
    assert.equal(c.fencingTimeoutMs, 60_000);
    assert.equal(c.ownerCheckIntervalMs, 30_000);
    assert.equal(c.campaignJitterMs, 200);
    assert.equal(c.sseHeartbeatMs, 15_000);
    assert.equal(c.sseMaxClients, 1000);
    assert.deepEqual(c.identity, {
      podName: 'app-0',
      podNamespace: 'team',
      podUid: 'uid-0',
      hostname: 'app-0',
    });
  });

  test("naiserator's exact arguments", () => {
    const c = ok([
      '--election=app',
      '--election-namespace=team',
      '--http=localhost:4040',
      '--probe-address=0.0.0.0:4041',
    ]);
    assert.equal(c.election, 'app');
    assert.equal(c.http.length, 2);
  });

  const forms: [string, string[]][] = [
    ['--flag=value', ['--election=app', '--log-level=debug']],
    ['--flag value', ['--election', 'app', '--log-level', 'debug']],
    ['-flag=value (Go style)', ['-election=app', '-log-level=debug']],
  ];
  for (const [name, argv] of forms) {
    test(`flag form ${name}`, () => {
      const c = ok(argv);
      assert.equal(c.election, 'app');
      assert.equal(c.logLevel, 'debug');
    });
  }

  test('env ELECTOR_* is used; a flag wins over env', () => {
    const env = {
      ...POD,
      ELECTOR_ELECTION: 'from-env',
      ELECTOR_LOG_FORMAT: 'text',
      ELECTOR_FENCING_TIMEOUT: '90s',
    };
    const c = ok([], env);
    assert.equal(c.election, 'from-env');
    assert.equal(c.logFormat, 'text');
    assert.equal(c.fencingTimeoutMs, 90_000);
    assert.equal(ok(['--election=from-flag'], env).election, 'from-flag');
  });

  test('HOSTNAME wins over the system hostname; the system hostname is the fallback', () => {
    assert.equal(ok(['--election=a']).identity.hostname, 'app-0');
    const { HOSTNAME: _h, ...noHost } = POD;
    assert.equal(ok(['--election=a'], noHost).identity.hostname, 'sys-host');
  });

  test('every problem at once', () => {
    const p = problems(
      ['--bogus', '--http=nope', '--log-format=xml', '--fencing-timeout=1s', '--election=Bad_Name'],
      {},
    );
    const expected = [
      /unknown flag --bogus/,
      /POD_NAME is not set/,
      /POD_UID is not set/,
      /Bad_Name.*lowercase DNS name/,
      /no namespace/,
      /--http .*not host:port/,
      /--log-format .*not json or text/,
      /--fencing-timeout .*outside 3s\.\.30m/,
    ];
    for (const re of expected)
      assert.ok(
        p.some((m) => re.test(m)),
        `missing ${re} in ${JSON.stringify(p)}`,
      );
    assert.equal(p.length, expected.length, JSON.stringify(p));
  });

  test('--sse-max-clients takes a whole number from 1 to 100000', () => {
    assert.equal(ok(['--election=a', '--sse-max-clients=5']).sseMaxClients, 5);
    assert.equal(ok(['--election=a'], { ...POD, ELECTOR_SSE_MAX_CLIENTS: '100000' }).sseMaxClients, 100_000);
    for (const bad of ['0', '100001', '-1', '1.5', '1e3', 'many', '']) {
      const p = problems(['--election=a', `--sse-max-clients=${bad}`], POD);
      assert.deepEqual(p, [
        `--sse-max-clients (ELECTOR_SSE_MAX_CLIENTS): "${bad}" is not a whole number from 1 to 100000`,
      ]);
    }
  });

  test('the Lease must live in the pod namespace', () => {
    const p = problems(['--election=a', '--election-namespace=other'], POD);
    assert.equal(p.length, 1);
    assert.match(p[0]!, /ownerReference must point to a Pod in its own namespace/);
  });

  test('--election-namespace stands in for a missing POD_NAMESPACE', () => {
    const { POD_NAMESPACE: _ns, ...env } = POD;
    assert.equal(ok(['--election=a', '--election-namespace=team'], env).namespace, 'team');
  });

  test('an election name longer than 63 characters is refused (label value, RBAC name)', () => {
    const p = problems([`--election=${'a'.repeat(64)}`], POD);
    assert.equal(p.length, 1);
  });

  test('a separate metrics address; a non-loopback election address is used as given', () => {
    const c = ok(['--election=a', '--metrics-address=:9090', '--http=10.0.0.5:4040']);
    assert.deepEqual(c.metrics, { host: '0.0.0.0', port: 9090 });
    assert.deepEqual(c.http, [{ host: '10.0.0.5', port: 4040 }]);
  });

  test('--help', () => {
    const r = parseConfig({ argv: ['--help'], env: {}, systemHostname: '' });
    assert.equal(r.kind, 'help');
    for (const o of OPTIONS)
      assert.ok(r.kind === 'help' && r.text.includes(o.flag) && r.text.includes(o.env));
  });

  test('log level "warning" is accepted as warn', () => {
    assert.equal(ok(['--election=a', '--log-level=WARNING']).logLevel, 'warn');
  });
});

describe('parseDuration', () => {
  const cases: [string, number | undefined][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['45', 45_000],
    ['', undefined],
    ['10x', undefined],
    ['-5s', undefined],
  ];
  for (const [text, ms] of cases) test(JSON.stringify(text), () => assert.equal(parseDuration(text), ms));
});

describe('parseAddress', () => {
  const cases: [string, ReturnType<typeof parseAddress> | RegExp][] = [
    ['127.0.0.1:4040', { host: '127.0.0.1', port: 4040 }],
    ['localhost:4040', { host: 'localhost', port: 4040 }],
    ['[::1]:4040', { host: '::1', port: 4040 }],
    [':4041', { host: '0.0.0.0', port: 4041 }],
    ['0.0.0.0:0', { host: '0.0.0.0', port: 0 }],
    ['4040', /not host:port/],
    ['::1:4040', /not host:port/],
    ['host:70000', /out of range/],
  ];
  for (const [text, expected] of cases) {
    test(text, () => {
      const got = parseAddress(text);
      if (expected instanceof RegExp)
        assert.match(typeof got === 'string' ? got : JSON.stringify(got), expected);
      else assert.deepEqual(got, expected);
    });
  }
});
