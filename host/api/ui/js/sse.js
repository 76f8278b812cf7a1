// Follows a session's event stream with fetch() and a streamed `text/event-stream` parser
// (EventSource cannot send the Authorization header). Reconnects with `Last-Event-ID`, so the
// server replays exactly what was missed.

import { problemOf, send } from './api.js';

/** Splits a text/event-stream into events; feed it text chunks, it calls `onEvent`. */
export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = '';
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A lone \r at the end of a chunk may be half of \r\n: wait for more.
      if (this.buffer[newline] === '\r' && newline === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith('\r\n', newline) ? 2 : 1;
      this.buffer = this.buffer.slice(newline + width);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return; // comment (heartbeat)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Streams `path` until `signal` aborts. `lastEventId()` gives the id to resume after (0: from
 * the start); `onEvent({id, event, data})` gets each event; `onState(state, error)` hears
 * `live`, `reconnecting` (with the error) and `failed` (a 4xx other than 408/429: not retried).
 */
export async function follow(path, { lastEventId, onEvent, onState = () => {}, signal }) {
  let delay = 500;
  while (!signal.aborted) {
    try {
      const headers = { Accept: 'text/event-stream' };
      const last = lastEventId();
      if (last > 0) headers['Last-Event-ID'] = String(last);
      const response = await send(path, { headers, signal });
      if (!response.ok) {
        const err = await problemOf(response);
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
          if (response.status === 401) window.dispatchEvent(new CustomEvent('everruns:unauthorized', { detail: err }));
          onState('failed', err);
          return;
        }
        throw err;
      }
      onState('live');
      delay = 500;
      const parser = new EventStreamParser(onEvent);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
      if (!signal.aborted) onState('reconnecting', new Error('the event stream ended'));
    } catch (err) {
      if (signal.aborted) return;
      onState('reconnecting', err);
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 8000);
  }
}
