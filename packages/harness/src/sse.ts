/**
 * Reading a `text/event-stream` response as an SSE client does, for the tests, the demo
 * and the benchmarks: events end at a blank line; `field: value` lines (one space after the
 * colon is dropped); `data` lines joined with "\n"; lines starting with `:` are comments.
 *
 *   onSseEvents(res, (e) => console.log(e.id, e.data));
 */
import type { Readable } from 'node:stream';

export interface SseEvent {
  /** The `data` lines joined with "\n"; undefined for a block without any (a heartbeat). */
  data?: string;
  id?: string;
  retry?: string;
  /** Comment lines, without their leading `:`. */
  comments: string[];
}

/** Calls `onEvent` for every complete event block of `stream`, as its bytes arrive. */
export function onSseEvents(stream: Readable, onEvent: (event: SseEvent) => void): void {
  stream.setEncoding('utf8');
  let buffer = '';
  stream.on('data', (chunk: string) => {
    buffer += chunk;
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      onEvent(parseBlock(block));
    }
  });
}

function parseBlock(block: string): SseEvent {
  const event: SseEvent = { comments: [] };
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) {
      event.comments.push(line.slice(1).trimStart());
      continue;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    else if (field === 'id') event.id = value;
    else if (field === 'retry') event.retry = value;
  }
  if (data.length > 0) event.data = data.join('\n');
  return event;
}
