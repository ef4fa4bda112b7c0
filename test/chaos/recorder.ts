/**
 * Records what every elector tells its app, from inside its pod: `GET /` polled every
 * `pollMs` over a keep-alive connection to the pod's loopback, and the `/sse` stream.
 * Each answer becomes an {@link Observation} stamped with the monotonic time it arrived,
 * and with `since`: the moment the elector says that answer took effect (its
 * `last_update`, which moves whenever the reported leader changes), converted to the same
 * monotonic clock (all processes share this host's clock).
 */
import { Agent, request, type ClientRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PodEndpoint } from './pods.ts';
import type { Observation } from './history.ts';
import { onSseEvents } from '@lifelease/harness/sse';

type Answer = NonNullable<Observation['answer']>;

/** `last_update` (RFC 3339, wall clock) as performance.now() time; undefined when absent. */
export function monotonicOf(lastUpdate: unknown): number | undefined {
  if (typeof lastUpdate !== 'string' || lastUpdate === '') return undefined;
  const wall = Date.parse(lastUpdate);
  if (Number.isNaN(wall)) return undefined;
  return wall - (Date.now() - performance.now());
}

function parseAnswer(body: string): Answer | undefined {
  try {
    const v = JSON.parse(body) as unknown;
    return v !== null && typeof v === 'object' ? v : undefined;
  } catch {
    return undefined;
  }
}

class PodAgent extends Agent {
  readonly #sandbox: PodEndpoint;
  readonly #port: number;
  constructor(sandbox: PodEndpoint, port: number) {
    super({ keepAlive: true, maxSockets: 1 });
    this.#sandbox = sandbox;
    this.#port = port;
  }
  override createConnection(): Socket {
    return this.#sandbox.connect(this.#port);
  }
}

export interface Attachment {
  /** Stops polling and streaming; records a final "no answer" at this moment. */
  detach(): Promise<void>;
}

export class Recorder {
  readonly history: Observation[] = [];
  readonly #latest = new Map<string, Observation>();
  readonly #pollMs: number;
  /** Answers by how they ended, for the report. */
  readonly counts = { polls: 0, pollFailures: 0, sseEvents: 0, sseStreams: 0 };

  constructor(options: { pollMs?: number } = {}) {
    this.#pollMs = options.pollMs ?? 50;
  }

  #push(o: Observation): void {
    this.history.push(o);
    const prev = this.#latest.get(o.pod);
    if (!prev || prev.t <= o.t) this.#latest.set(o.pod, o);
  }

  /**
   * Records that a pod's elector stopped answering now (the runner SIGKILLed it): the
   * checker then ends its claim at this moment instead of at the next failed poll.
   */
  silence(pod: string, hostname: string): void {
    this.#push({ t: performance.now(), pod, hostname, via: 'poll' });
  }

  /** The most recent observation of a pod. */
  latest(pod: string): Observation | undefined {
    return this.#latest.get(pod);
  }

  /** Polls and streams one running container of pod `pod` (hostname `hostname`). */
  attach(pod: string, hostname: string, sandbox: PodEndpoint, port: number): Attachment {
    let active = true;
    const agent = new PodAgent(sandbox, port);
    const record = (answer: Answer | undefined, via: Observation['via']) => {
      const since = monotonicOf(answer?.last_update);
      this.#push({
        t: performance.now(),
        pod,
        hostname,
        via,
        ...(answer ? { answer } : {}),
        ...(since !== undefined ? { since } : {}),
      });
    };

    const poll = async () => {
      while (active) {
        const started = performance.now();
        const answer = await new Promise<Answer | undefined>((resolve) => {
          const req = request(
            { agent, path: '/', headers: { host: `localhost:${port}` }, timeout: 1000 },
            (res: IncomingMessage) => {
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (body += c));
              res.on('end', () => resolve(parseAnswer(body)));
              res.on('error', () => resolve(undefined));
            },
          );
          req.on('timeout', () => req.destroy(new Error('timeout')));
          req.on('error', () => resolve(undefined));
          req.end();
        });
        if (!active) break;
        this.counts.polls++;
        if (!answer) this.counts.pollFailures++;
        record(answer, 'poll');
        await sleep(Math.max(0, this.#pollMs - (performance.now() - started)));
      }
    };

    let stream: ClientRequest | undefined;
    const subscribe = async () => {
      while (active) {
        await new Promise<void>((resolve) => {
          const req = sandbox.raw(port, '/sse', { headers: { accept: 'text/event-stream' } });
          stream = req;
          req.on('response', (res: IncomingMessage) => {
            if (res.statusCode !== 200) {
              res.resume();
              res.on('end', resolve);
              return;
            }
            this.counts.sseStreams++;
            onSseEvents(res, (event) => {
              if (event.data && active) {
                this.counts.sseEvents++;
                record(parseAnswer(event.data), 'sse');
              }
            });
            res.on('error', () => resolve());
            res.on('close', () => resolve());
          });
          req.on('error', () => resolve());
          req.end();
        });
        // The stream ended (the container restarted or is starting): an app would reconnect.
        if (active) await sleep(200);
      }
    };

    const loops = Promise.all([poll(), subscribe()]);
    return {
      detach: async () => {
        if (!active) return;
        active = false;
        stream?.destroy();
        agent.destroy();
        // The app in this pod gets no answer from now on.
        record(undefined, 'poll');
        await loops;
      },
    };
  }
}
