// Chat: pick an agent, start or reopen a session, send messages and watch the answer stream.
// The transcript is rebuilt from the session's durable event log: history as JSON pages, then
// the live SSE stream resumed after the last event applied. That id is kept per session in
// sessionStorage, so a reload mid-run replays the history up to it and resumes the stream with
// `Last-Event-ID` right there: nothing is lost and nothing is shown twice.

import { api, listAll, problemBox } from '../api.js';
import { h, pretty, replace, when } from '../dom.js';
import { renderMarkdown } from '../markdown.js';
import { follow } from '../sse.js';

const AGENT_STORAGE = 'everruns.chat.agent';
const lastEventKey = (sid) => `everruns.lastEvent.${sid}`;
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const STATUS_TEXT = {
  queued: 'Queued',
  running: 'Running…',
  cancelling: 'Cancelling…',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

/** Applies events (each once, in order) to the transcript's DOM. */
class Transcript {
  constructor(el, sid, onRunsChanged) {
    this.el = el;
    this.sid = sid;
    this.onRunsChanged = onRunsChanged;
    this.applied = 0;
    this.messages = new Map(); // message_id -> {el, body, text, pending}
    this.tools = new Map(); // tool_call_id -> element
    this.runs = new Map(); // run_id -> {chip, status}
    this.latestRun = null;
  }

  /** The runs that have not finished yet, oldest first. */
  activeRuns() {
    return [...this.runs.entries()].filter(([, r]) => !TERMINAL.has(r.status)).map(([id]) => id);
  }

  apply(event) {
    if (!event || typeof event.seq !== 'number' || event.seq <= this.applied) return;
    this.applied = event.seq;
    sessionStorage.setItem(lastEventKey(this.sid), String(event.seq));
    const data = event.data || {};
    const runId = event.run_id || data.run_id || null;
    const stick = this.nearBottom();
    switch (event.type) {
      case 'message.created':
        if (data.role === 'user') {
          this.el.append(h('div', { class: 'msg user', dataset: { messageId: data.message_id || '' } },
            h('div', { class: 'who', text: 'You' }),
            h('div', { class: 'body plain', text: data.content || '' })));
        }
        break;
      case 'run.queued':
        this.runStatus(runId, data.queued_behind ? 'queued' : 'queued');
        break;
      case 'run.started':
        this.runStatus(runId, 'running');
        break;
      case 'message.delta':
        this.delta(data.message_id, data.delta || '');
        break;
      case 'message.completed':
        this.completed(data.message_id, data.text || '');
        break;
      case 'tool.started':
        this.toolStarted(data);
        break;
      case 'tool.completed':
      case 'tool.failed':
        this.toolFinished(data, event.type === 'tool.completed');
        break;
      case 'tool.blocked':
        // A capability's hook stopped the call: it never ran.
        this.toolFinished({ ...data, error: `blocked by ${data.blocked_by}: ${data.reason}` }, false, 'blocked');
        break;
      case 'run.completed':
        this.runStatus(runId, 'completed');
        break;
      case 'run.failed':
        this.runStatus(runId, 'failed', data.error);
        break;
      case 'run.cancelled':
        this.runStatus(runId, 'cancelled');
        break;
      default:
        break; // step.completed, usage, hook.applied: nothing to show
    }
    // The run's status line stays below everything the run produced.
    const run = runId && this.runs.get(runId);
    if (run && event.type !== 'message.created') this.el.append(run.chip);
    if (stick) this.scrollToEnd();
  }

  runStatus(runId, status, error) {
    if (!runId) return;
    let run = this.runs.get(runId);
    if (!run) {
      run = { chip: h('div', { class: 'run', dataset: { runId } }), status };
      this.runs.set(runId, run);
    }
    // Never go back from a final state (events arrive in order, but be strict).
    if (TERMINAL.has(run.status) && !TERMINAL.has(status)) return;
    run.status = status;
    run.chip.dataset.status = status;
    replace(run.chip, h('span', { class: `badge ${status}`, text: STATUS_TEXT[status] || status }),
      error ? h('span', { class: 'run-error', text: ` ${error}` }) : null);
    this.latestRun = runId;
    this.onRunsChanged(this);
  }

  message(id) {
    let m = this.messages.get(id);
    if (!m) {
      const body = h('div', { class: 'body markdown' });
      const el = h('div', { class: 'msg assistant', dataset: { messageId: id || '', streaming: 'true' } },
        h('div', { class: 'who', text: 'Agent' }), body);
      m = { el, body, text: '', pending: false };
      this.messages.set(id, m);
      this.el.append(el);
    }
    return m;
  }

  delta(id, text) {
    const m = this.message(id);
    m.text += text;
    this.schedule(m);
  }

  completed(id, text) {
    const existing = this.messages.get(id);
    if (!existing && !text) return; // only tool calls: the tool cards show them
    const m = existing || this.message(id);
    m.text = text; // the full text is authoritative
    delete m.el.dataset.streaming;
    if (!text) m.el.remove();
    else this.schedule(m);
  }

  schedule(m) {
    if (m.pending) return;
    m.pending = true;
    requestAnimationFrame(() => {
      m.pending = false;
      const stick = this.nearBottom();
      replace(m.body, renderMarkdown(m.text));
      if (stick) this.scrollToEnd();
    });
  }

  toolStarted(data) {
    const id = data.tool_call_id || `${data.run_id}:${data.step_no}`;
    const el = h('div', { class: 'tool', dataset: { toolCallId: id, state: 'running' } },
      h('div', { class: 'tool-head' },
        h('span', { class: 'tool-name', text: data.name || 'tool' }),
        data.capability ? h('span', { class: 'muted', text: ` · ${data.capability}` }) : null,
        h('span', { class: 'badge running tool-state', text: 'running' })),
      h('details', { class: 'tool-args' }, h('summary', { text: 'Arguments' }), h('pre', { text: pretty(data.arguments ?? {}) })),
      h('div', { class: 'tool-result' }));
    this.tools.set(id, el);
    this.el.append(el);
  }

  toolFinished(data, ok, label) {
    const id = data.tool_call_id || `${data.run_id}:${data.step_no}`;
    let el = this.tools.get(id);
    if (!el) {
      this.toolStarted(data);
      el = this.tools.get(id);
    }
    el.dataset.state = ok ? 'completed' : 'failed';
    const badge = el.querySelector('.tool-state');
    badge.className = `badge tool-state ${ok ? 'completed' : 'failed'}`;
    badge.textContent = label || (ok ? 'done' : 'failed');
    replace(el.querySelector('.tool-result'),
      h('div', { class: 'muted', text: ok ? 'Result' : 'Error' }),
      h('pre', { class: ok ? '' : 'error', text: pretty(ok ? data.output : data.error) }));
  }

  nearBottom() {
    const s = this.el;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }
}

export async function render(main, { params, signal, navigate }) {
  const sid = params[0] || null;
  const agentSelect = h('select', { id: 'agent-select', name: 'agent' });
  const sessionList = h('ul', { id: 'session-list', class: 'session-list' });
  const title = h('h1', { id: 'chat-title', text: 'New conversation' });
  const runStatus = h('span', { id: 'run-status', class: 'badge', dataset: { runStatus: '' } });
  const streamStatus = h('span', { id: 'stream-status', class: 'muted small', dataset: { state: '' } });
  const transcriptEl = h('div', { id: 'transcript', class: 'transcript', 'aria-live': 'polite' });
  const input = h('textarea', { id: 'message-input', name: 'message', rows: 3, placeholder: 'Message the agent (Enter sends, Shift+Enter for a new line)' });
  const sendButton = h('button', { id: 'send', type: 'submit', text: 'Send' });
  const cancelButton = h('button', { id: 'cancel-run', type: 'button', class: 'danger', text: 'Cancel run', disabled: true });
  const composerStatus = h('div', { id: 'composer-status', class: 'form-status' });
  const composer = h('form', { id: 'composer', class: 'composer' }, input, h('div', { class: 'actions' }, sendButton, cancelButton), composerStatus);
  const side = h('aside', { class: 'chat-side' },
    h('div', { class: 'field' }, h('label', { for: 'agent-select', text: 'Agent' }), agentSelect),
    h('button', { id: 'new-chat', type: 'button', class: 'secondary', text: 'New conversation', onclick: () => navigate('#/chat') }),
    // On a phone the list folds away while a conversation is open.
    h('details', { class: 'sessions', open: !sid || window.matchMedia('(min-width: 900px)').matches },
      h('summary', {}, h('h2', { text: 'Conversations' })), sessionList));
  replace(main, h('div', { class: 'chat' }, side,
    h('section', { class: 'chat-main' }, h('header', { class: 'chat-head' }, title, runStatus, streamStatus), transcriptEl, composer)));

  const onRunsChanged = (t) => {
    const active = t.activeRuns();
    const shown = t.latestRun ? t.runs.get(t.latestRun).status : '';
    runStatus.dataset.runStatus = shown;
    runStatus.className = `badge ${shown}`;
    runStatus.textContent = shown ? STATUS_TEXT[shown] || shown : '';
    cancelButton.disabled = active.length === 0;
  };
  const transcript = sid ? new Transcript(transcriptEl, sid, onRunsChanged) : null;

  let agents;
  let session = null;
  try {
    agents = await listAll('/v1/agents', { signal });
    if (sid) session = await api('GET', `/v1/sessions/${encodeURIComponent(sid)}`, undefined, { signal });
  } catch (err) {
    if (signal.aborted) return;
    replace(transcriptEl, problemBox(err));
    return;
  }
  const usable = agents.filter((a) => !a.archived || (session && a.id === session.agent_id));
  if (!usable.length) {
    replace(transcriptEl, h('div', { class: 'empty' },
      h('p', { text: 'There is no agent to talk to yet.' }),
      h('a', { href: '#/agents/new', class: 'button', text: 'Create an agent' })));
    composer.hidden = true;
    return;
  }
  const remembered = sessionStorage.getItem(AGENT_STORAGE);
  let agentId = session ? session.agent_id
    : usable.some((a) => a.id === remembered) ? remembered : usable[0].id;
  replace(agentSelect, usable.map((a) => h('option', { value: a.id, text: a.archived ? `${a.name} (archived)` : a.name, selected: a.id === agentId })));
  agentSelect.addEventListener('change', () => {
    sessionStorage.setItem(AGENT_STORAGE, agentSelect.value);
    if (sid) navigate('#/chat');
    else {
      agentId = agentSelect.value;
      loadSessions();
    }
  });
  sessionStorage.setItem(AGENT_STORAGE, agentId);
  if (session) title.textContent = session.title || 'Untitled conversation';

  async function loadSessions() {
    try {
      const sessions = await listAll(`/v1/sessions?agent_id=${encodeURIComponent(agentId)}`, { signal });
      replace(sessionList, sessions.reverse().map((s) => h('li', {},
        h('a', { href: `#/chat/${s.id}`, 'aria-current': s.id === sid ? 'page' : null },
          h('span', { class: 'session-title', text: s.title || 'Untitled conversation' }),
          h('small', { class: 'muted', text: when(s.created_at) })))));
      if (!sessions.length) replace(sessionList, h('li', { class: 'muted', text: 'No conversations yet.' }));
    } catch (err) {
      if (!signal.aborted) replace(sessionList, h('li', {}, problemBox(err)));
    }
  }
  loadSessions();

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  composer.addEventListener('submit', async (event) => {
    event.preventDefault();
    const content = input.value;
    if (!content.trim()) return;
    sendButton.disabled = true;
    replace(composerStatus);
    try {
      let target = sid;
      if (!target) {
        const created = await api('POST', '/v1/sessions', { agent_id: agentId, title: content.trim().slice(0, 80) });
        target = created.id;
      }
      await api('POST', `/v1/sessions/${encodeURIComponent(target)}/messages`, { content },
        { headers: { 'Idempotency-Key': crypto.randomUUID() } });
      input.value = '';
      if (!sid) navigate(`#/chat/${target}`);
    } catch (err) {
      replace(composerStatus, problemBox(err));
    } finally {
      sendButton.disabled = false;
    }
  });
  cancelButton.addEventListener('click', async () => {
    cancelButton.disabled = true;
    replace(composerStatus);
    try {
      for (const runId of transcript.activeRuns()) {
        const run = await api('POST', `/v1/runs/${encodeURIComponent(runId)}/cancel`);
        transcript.runStatus(runId, run.status);
      }
    } catch (err) {
      replace(composerStatus, problemBox(err));
      onRunsChanged(transcript);
    }
  });

  if (!sid) {
    replace(transcriptEl, h('p', { class: 'empty muted', text: 'Send a message to start a conversation.' }));
    input.focus();
    return;
  }

  // History up to the last event this tab saw (all of it on a first visit), then live.
  const seen = Number(sessionStorage.getItem(lastEventKey(sid))) || 0;
  try {
    let since = 0;
    for (;;) {
      const page = await api('GET', `/v1/sessions/${encodeURIComponent(sid)}/events?since=${since}&limit=500`, undefined, { signal });
      const events = seen ? page.data.filter((e) => e.seq <= seen) : page.data;
      events.forEach((e) => transcript.apply(e));
      if (!page.next_since || (seen && page.next_since >= seen)) break;
      since = page.next_since;
    }
  } catch (err) {
    if (signal.aborted) return;
    transcriptEl.append(problemBox(err));
  }
  // After the answers rendered (next frame).
  requestAnimationFrame(() => transcript.scrollToEnd());
  input.focus();
  follow(`/v1/sessions/${encodeURIComponent(sid)}/events`, {
    signal,
    lastEventId: () => transcript.applied,
    onEvent: (e) => {
      try {
        transcript.apply(JSON.parse(e.data));
      } catch (err) {
        console.error('bad event', err);
      }
    },
    onState: (state, err) => {
      streamStatus.dataset.state = state;
      streamStatus.textContent = state === 'live' ? 'live' : state === 'reconnecting' ? 'reconnecting…' : 'stream stopped';
      if (state === 'failed' && err) transcriptEl.append(problemBox(err));
    },
  });
}
