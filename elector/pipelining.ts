/**
 * Fairness between the clients of one HTTP server: a connection may have at most
 * `perTurn` requests parsed in one turn of the event loop; one that sends more is closed.
 *
 * Why: the elector answers on loopback and on the pod IP, where any client can pipeline
 * requests and never read the answers. The kernel's socket buffers absorb megabytes of
 * answers before Node.js feels back-pressure, and libuv reads up to 32 chunks of 64 KiB from
 * one socket per turn, each parsed at once: such a client made the elector answer ~23,000
 * requests (about 1 s of CPU on a quiet core, 10 s at a load average of 20) before any other
 * client's `GET /` got a turn. Real clients (curl, Go, Java, Python, Node.js) send one request
 * at a time per connection; HTTP/1.1 pipelining is off in all of them.
 *
 * The parser still finishes the chunk it is in when the connection is closed, so one such
 * client costs at most one chunk (~1,800 tiny requests) of work.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/** How many requests one connection may have parsed in one event-loop turn. */
export const PIPELINED_REQUESTS_PER_TURN = 64;

/** Closes connections that pipeline more than `perTurn` requests in one turn; `onClose` counts them. */
export function limitPipelining(
  server: Server,
  options: { perTurn?: number; onClose?: () => void } = {},
): void {
  const perTurn = options.perTurn ?? PIPELINED_REQUESTS_PER_TURN;
  const counts = new WeakMap<Socket, number>();
  // Prepended, so the count is taken before any other handler does work for the request.
  server.prependListener('request', (req) => {
    const socket = req.socket;
    const n = (counts.get(socket) ?? 0) + 1;
    counts.set(socket, n);
    if (n === 1) setImmediate(() => counts.delete(socket));
    if (n === perTurn + 1) {
      options.onClose?.();
      socket.destroy();
    }
  });
}
