/**
 * common/logger.ts: the JSON lines pino wrote (level label, ISO time, base, mixin, child
 * bindings, fields, msg; errors serialized), levels and child levels, the text format.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fastify from 'fastify';
import { createLogger, type LoggerOptions } from '../../../common/logger.ts';

function collect(options: Partial<LoggerOptions> = {}) {
  const lines: string[] = [];
  const log = createLogger({
    level: 'info',
    stream: { write: (l: string) => lines.push(l) },
    now: () => Date.parse('2026-12-01T10:00:00.000Z'),
    ...options,
  });
  return { log, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('createLogger', () => {
  test('one JSON line per call, fields in pino order: level, time, base, mixin, bindings, fields, msg', () => {
    let leader = 'a';
    const { log, lines } = collect({ base: { election: 'e' }, mixin: () => ({ leader }) });
    log.info({ holder: 'x' }, 'leader changed');
    leader = 'b';
    log.child({ component: 'http' }).warn('hello');
    assert.deepEqual(lines, [
      '{"level":"info","time":"2026-12-01T10:00:00.000Z","election":"e","leader":"a","holder":"x","msg":"leader changed"}\n',
      '{"level":"warn","time":"2026-12-01T10:00:00.000Z","election":"e","leader":"b","component":"http","msg":"hello"}\n',
    ]);
  });

  test('levels: below the threshold nothing is written; a child may have its own level; silent writes nothing', () => {
    const { log, records } = collect({ level: 'info' });
    log.debug('no');
    log.trace('no');
    const quiet = log.child({ c: 1 }, { level: 'warn' });
    quiet.info('no');
    quiet.error('yes 1');
    log.child({ c: 2 }, { level: 'debug' }).debug('yes 2');
    log.fatal('yes 3');
    log.level = 'silent';
    log.fatal('no');
    assert.deepEqual(
      records().map((r) => [r['level'], r['msg']]),
      [
        ['error', 'yes 1'],
        ['debug', 'yes 2'],
        ['fatal', 'yes 3'],
      ],
    );
    assert.equal(log.isLevelEnabled('fatal'), false);
    assert.throws(() => (log.level = 'loud' as never), /unknown log level/);
  });

  test('errors are serialized as pino does (type, message, stack, own fields), also as the first argument', () => {
    const { log, records } = collect();
    const err = Object.assign(new TypeError('boom'), { code: 'E_X' });
    log.error({ err }, 'failed');
    log.error(new Error('direct'));
    const [a, b] = records();
    assert.deepEqual(
      { ...(a!['err'] as object), stack: undefined },
      { type: 'TypeError', message: 'boom', stack: undefined, code: 'E_X' },
    );
    assert.match(String((a!['err'] as { stack: string }).stack), /TypeError: boom/);
    assert.equal(b!['msg'], 'direct');
    assert.equal((b!['err'] as { message: string }).message, 'direct');
  });

  test('a cycle or a BigInt still gives a line', () => {
    const { log, records } = collect();
    const o: Record<string, unknown> = { n: 1n };
    o['self'] = o;
    log.info({ o }, 'odd');
    assert.deepEqual(records()[0]!['o'], { n: '1', self: '[Circular]' });
  });

  test('text format: time LEVEL message key=value', () => {
    const { log, lines } = collect({ format: 'text', base: { election: 'e' } });
    log.info({ holder: 'x y', n: 2 }, 'leader changed');
    assert.deepEqual(lines, ['2026-12-01T10:00:00.000Z INFO leader changed election=e holder="x y" n=2\n']);
  });

  test('fastify takes it as its loggerInstance (what the webhook needs to switch to it)', async () => {
    const { log, records } = collect({ level: 'info' });
    const app = fastify({ loggerInstance: log });
    app.get('/', (request, reply) => {
      request.log.info({ x: 1 }, 'in a handler');
      void reply.send({ ok: true });
    });
    app.get('/fail', () => Promise.reject(new Error('handler failed')));
    assert.equal((await app.inject({ url: '/' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/fail' })).statusCode, 500);
    await app.close();
    const handler = records().find((r) => r['msg'] === 'in a handler');
    assert.equal(handler?.['x'], 1);
    assert.equal(typeof handler?.['reqId'], 'string', 'the request child logger carries fastify reqId');
    assert.ok(
      records().some(
        (r) => r['level'] === 'error' && (r['err'] as { message?: string })?.message === 'handler failed',
      ),
    );
  });
});
