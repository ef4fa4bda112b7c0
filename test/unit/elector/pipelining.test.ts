/**
 * A client that pipelines requests and never reads the answers cannot take the event loop
 * from the others (elector/pipelining.ts): its connection is closed after a bounded amount of
 * work, while a keep-alive client asking one request at a time is never cut.
 */
import assert from 'node:assert/strict';
import { createServer, request, Agent, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { limitPipelining, PIPELINED_REQUESTS_PER_TURN } from '../../../elector/pipelining.ts';
import { eventually } from '@lifelease/harness/wait';

const REQUESTS = 10_000;

async function server(
  limit: boolean,
): Promise<{ server: Server; port: number; handled: () => number; closed: () => number }> {
  let handled = 0;
  let closed = 0;
  const s = createServer((_req, res) => {
    handled++;
    res.setHeader('content-type', 'application/json');
    res.end('{"name":"app-0","last_update":"2026-12-01T00:00:00Z"}');
  });
  if (limit) limitPipelining(s);
  s.on('connection', (socket) => socket.on('close', () => closed++));
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return {
    server: s,
    port: (s.address() as AddressInfo).port,
    handled: () => handled,
    closed: () => closed,
  };
}

/** Pipelines REQUESTS `GET /` on one connection and never reads; returns its `destroy`. */
function pipelineUnread(port: number): () => void {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.pause();
  socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(REQUESTS));
  return () => socket.destroy();
}

function get(port: number, agent?: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', ...(agent ? { agent } : {}) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('pipelining limit', () => {
  test('without it, one unread pipelining client makes the server answer all its requests', async () => {
    // The control: shows the next test can fail (what the elector did before).
    const s = await server(false);
    const destroy = pipelineUnread(s.port);
    try {
      await eventually('every pipelined request answered', () => s.handled() === REQUESTS, 120_000);
      assert.equal(s.closed(), 0);
    } finally {
      destroy();
      s.server.close();
    }
  });

  test('with it, the connection is closed after at most about one read of work, and others are answered', async () => {
    const s = await server(true);
    const destroy = pipelineUnread(s.port);
    try {
      await eventually('the server closed the pipelining connection', () => s.closed() === 1, 120_000);
      assert.equal(await get(s.port), 200, "another client's GET / is answered");
      // The parser finishes the 64 KiB chunk it is in: ~1,870 of these requests at most.
      const work = s.handled() - 1;
      assert.ok(
        work > PIPELINED_REQUESTS_PER_TURN,
        `the limit applies per turn, not from the first (${work})`,
      );
      assert.ok(
        work < 4000,
        `at most about one chunk of work for the abusive client, not ${work} of ${REQUESTS}`,
      );
    } finally {
      destroy();
      s.server.close();
    }
  });

  test('a keep-alive client asking one request at a time is never cut', async () => {
    const s = await server(true);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    let connections = 0;
    s.server.on('connection', () => connections++);
    try {
      for (let i = 0; i < 3 * PIPELINED_REQUESTS_PER_TURN; i++) assert.equal(await get(s.port, agent), 200);
      assert.equal(connections, 1, 'one connection served them all');
    } finally {
      agent.destroy();
      s.server.close();
    }
  });
});
