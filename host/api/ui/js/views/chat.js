// Chat: pick an agent, start or reopen a session, send messages and watch the answer stream.
// The transcript is rebuilt from the session's durable event log: history as JSON pages, then
// the live SSE stream resumed after the last event applied. That id is kept per session in
// sessionStorage, so a reload mid-run replays the history up to it and resumes the stream with
// `Last-Event-ID` right there: nothing is lost and nothing is shown twice. A session's
// settings (its overrides of the agent's configuration) open over the transcript, and each
// run's status line opens the configuration that run executed with. A tool call that needs a
// person's approval shows as a card with Approve / Reject until its resolution arrives (from
// the log on a reload, so a decided call never offers the buttons again), and the conversation
// list marks the sessions with calls waiting for approval.

import { ApiError, api, clearFieldErrors, listAll, problemBox, showFieldErrors } from '../api.js';
import { h, pretty, replace, when } from '../dom.js';
import { renderMarkdown } from '../markdown.js';
import { capabilityChoice, fieldOf } from '../schema_form.js';
import { follow } from '../sse.js';
import { modelFields } from './agents.js';

const AGENT_STORAGE = 'everruns.chat.agent';
const lastEventKey = (sid) => `everruns.lastEvent.${sid}`;
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const STATUS_TEXT = {
  queued: 'Queued',
  running: 'Running…',
  waiting_approval: 'Waiting for approval',
  cancelling: 'Cancelling…',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

/** Applies events (each once, in order) to the transcript's DOM. */
class Transcript {
  constructor(el, sid, onRunsChanged, onApprovalsChanged = () => {}) {
    this.el = el;
    this.sid = sid;
    this.onRunsChanged = onRunsChanged;
    this.onApprovalsChanged = onApprovalsChanged;
    this.applied = 0;
    this.messages = new Map(); // message_id -> {el, body, text, pending}
    this.tools = new Map(); // tool_call_id -> element
    this.approvals = new Map(); // approval_id -> approvalCard()
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
      case 'tool.approval_requested':
        this.approvalRequested(data, runId);
        break;
      case 'tool.approval_resolved':
        this.approvalResolved(data, runId);
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
      run = { chip: h('div', { class: 'run', dataset: { runId } }), status, details: runDetails(runId) };
      this.runs.set(runId, run);
    }
    // Never go back from a final state (events arrive in order, but be strict).
    if (TERMINAL.has(run.status) && !TERMINAL.has(status)) return;
    run.status = status;
    run.chip.dataset.status = status;
    replace(run.chip, h('span', { class: `badge ${status}`, text: STATUS_TEXT[status] || status }),
      error ? h('span', { class: 'run-error', text: ` ${error}` }) : null,
      run.details);
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

  approvalRequested(data, runId) {
    const id = data.approval_id;
    if (!id || this.approvals.has(id)) return;
    const card = approvalCard(data, runId);
    this.approvals.set(id, card);
    this.el.append(card.el);
    this.runStatus(runId, 'waiting_approval');
    this.onApprovalsChanged(this);
  }

  approvalResolved(data, runId) {
    const id = data.approval_id;
    if (!id) return;
    let card = this.approvals.get(id);
    if (!card) {
      // Its request is not in view (never expected: the log is replayed from the start).
      this.approvalRequested(data, runId);
      card = this.approvals.get(id);
    }
    card.resolve(data.decision, data.reason);
    // The last decision queues the run again; a worker's run.started follows.
    const run = runId && this.runs.get(runId);
    const waiting = [...this.approvals.values()].some((c) => c.runId === runId && c.pending());
    if (run && run.status === 'waiting_approval' && !waiting) this.runStatus(runId, 'queued');
    this.onApprovalsChanged(this);
  }

  nearBottom() {
    const s = this.el;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }
}

// ---- a tool call waiting for approval ----
// A card per `tool.approval_requested`: what would run (tool, capability, arguments exactly as
// they would run), why it needs approval and until when, with Approve and Reject (which asks
// for an optional reason first). A decision is posted to the run's approval; a refusal (409:
// already decided, expired, the run no longer waits) shows the server's reason in the card.
// The card shows the outcome when the decision's answer or `tool.approval_resolved` arrives.

const OUTCOME = {
  approved: 'Approved',
  rejected: 'Rejected',
  expired: 'Expired',
  cancelled: 'Cancelled',
};
const OUTCOME_NOTE = {
  expired: 'nobody decided in time',
  cancelled: 'the run was cancelled',
};

let approvalCount = 0;

/** The card for `data` (a `tool.approval_requested` payload) of run `runId`. */
function approvalCard(data, runId) {
  const id = data.approval_id;
  const name = data.name || 'tool';
  runId = runId || data.run_id || '';
  let state = 'pending';
  approvalCount += 1;
  const reasonId = `approval-reason-${approvalCount}`;

  const badge = h('span', { class: 'badge approval-state waiting_approval', text: 'needs approval' });
  const approve = h('button', { type: 'button', class: 'small approve', text: 'Approve' });
  const reject = h('button', { type: 'button', class: 'small danger reject', text: 'Reject' });
  const actions = h('div', { class: 'actions approval-actions', dataset: { needs: 'operator' } }, approve, reject);
  const reasonInput = h('input', {
    id: reasonId, type: 'text', class: 'reject-reason', name: 'reason', maxlength: 4096, autocomplete: 'off',
    placeholder: 'Optional; the model is told',
  });
  const confirm = h('button', { type: 'submit', class: 'small danger confirm-reject', text: 'Reject the call' });
  const back = h('button', { type: 'button', class: 'small secondary cancel-reject', text: 'Back' });
  const rejectForm = h('form', { class: 'reject-form', hidden: true, novalidate: true },
    h('div', { class: 'field' }, h('label', { for: reasonId, text: 'Reason for rejecting' }), reasonInput),
    h('div', { class: 'actions' }, confirm, back));
  const expiry = data.expires_at
    ? h('p', { class: 'muted small approval-expiry', text: `Expires ${when(data.expires_at)} (counts as a rejection).` })
    : null;
  const problem = h('div', { class: 'form-status approval-problem' });
  const outcome = h('p', { class: 'approval-outcome', hidden: true });
  const el = h('div', {
    class: 'approval', role: 'group', 'aria-label': `Approval for ${name}`,
    dataset: { approvalId: id, toolName: name, toolCallId: data.tool_call_id || '', runId, state },
  },
  h('div', { class: 'tool-head' },
    h('span', { class: 'tool-name', text: name }),
    data.capability ? h('span', { class: 'muted approval-capability', text: ` · ${data.capability}` }) : null,
    badge),
  data.reason ? h('p', { class: 'approval-why', text: data.reason }) : null,
  h('div', { class: 'muted small', text: 'Arguments (exactly what runs if approved)' }),
  h('pre', { class: 'approval-args', text: pretty(data.arguments ?? {}) }),
  expiry, actions, rejectForm, problem, outcome);

  const controls = [approve, reject, confirm, back, reasonInput];
  const decide = async (decision, reason) => {
    controls.forEach((c) => { c.disabled = true; });
    replace(problem);
    try {
      const body = { decision };
      if (reason) body.reason = reason;
      const decided = await api('POST', `/v1/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(id)}`, body);
      resolve(decided.status, decided.decision_reason);
    } catch (err) {
      replace(problem, problemBox(err));
      controls.forEach((c) => { c.disabled = false; });
    }
  };
  approve.addEventListener('click', () => decide('approve'));
  reject.addEventListener('click', () => {
    actions.hidden = true;
    rejectForm.hidden = false;
    reasonInput.focus();
  });
  back.addEventListener('click', () => {
    rejectForm.hidden = true;
    actions.hidden = false;
    approve.focus();
  });
  rejectForm.addEventListener('submit', (event) => {
    event.preventDefault();
    decide('reject', reasonInput.value.trim());
  });

  /** Shows the outcome (`approved`, `rejected`, `expired`, `cancelled`); the buttons go. */
  function resolve(decision, reason) {
    if (!OUTCOME[decision]) return;
    state = decision;
    el.dataset.state = decision;
    badge.className = `badge approval-state ${decision}`;
    badge.textContent = decision;
    actions.remove();
    rejectForm.remove();
    if (expiry) expiry.remove();
    const note = reason || OUTCOME_NOTE[decision] || '';
    replace(outcome, h('strong', { text: OUTCOME[decision] }),
      note ? ': ' : null,
      note ? h('span', { class: 'decision-reason', text: note }) : null);
    outcome.hidden = false;
  }

  return { el, runId, resolve, pending: () => state === 'pending' };
}

// ---- a run's effective configuration ----
// Behind a disclosure on its status line: fetched from GET /v1/runs/{id} the first time it is
// opened (it is fixed when the run is created, so once is enough): the model settings, the
// capabilities with their configs, the tools offered and the system prompt's hash.

/** The disclosure for run `runId`: a <details> to place next to its status chip. */
function runDetails(runId) {
  const body = h('div', { class: 'run-config', 'aria-live': 'polite' });
  const details = h('details', { class: 'run-details' },
    h('summary', { text: 'Configuration' }), body);
  let state = 'idle'; // idle | loading | loaded
  details.addEventListener('toggle', async () => {
    if (!details.open || state !== 'idle') return;
    state = 'loading';
    replace(body, h('p', { class: 'muted', text: 'Loading…' }));
    try {
      const run = await api('GET', `/v1/runs/${encodeURIComponent(runId)}`);
      replace(body, configView(run.config));
      details.dataset.loaded = 'true';
      state = 'loaded';
    } catch (err) {
      replace(body, problemBox(err));
      state = 'idle'; // closing and opening again retries
    }
  });
  return details;
}

const orDefault = (value, fallback) => (value === null || value === undefined ? h('span', { class: 'muted', text: fallback }) : String(value));

/** The facts of a run's `config` (null for runs created before configs were recorded). */
function configView(config) {
  if (!config) {
    return h('p', { class: 'muted', text: 'This run was created before runs recorded their configuration: it used the agent’s settings of the time.' });
  }
  const model = config.model || {};
  const caps = Array.isArray(config.capabilities) ? config.capabilities : [];
  const tools = Array.isArray(config.tools) ? config.tools : [];
  const fact = (key, label, value) => [h('dt', { text: label }), h('dd', { dataset: { config: key } }, value)];
  const hasConfig = (c) => c.config && typeof c.config === 'object' && Object.keys(c.config).length > 0;
  return h('dl', { class: 'facts run-facts' },
    fact('provider', 'Provider', orDefault(model.provider, 'server default')),
    fact('model', 'Model', orDefault(model.model, 'provider default')),
    fact('temperature', 'Temperature', orDefault(model.temperature, 'provider default')),
    fact('max_tokens', 'Max tokens', orDefault(model.max_tokens, 'provider default')),
    fact('max_steps', 'Max steps', orDefault(model.max_steps, 'server default')),
    fact('capabilities', 'Capabilities', caps.length
      ? h('ul', { class: 'plain-list' }, caps.map((c) => h('li', { dataset: { capability: c.id } },
        h('code', { text: c.id }),
        hasConfig(c) ? h('pre', { text: pretty(c.config) }) : h('span', { class: 'muted', text: ' (no config)' }))))
      : h('span', { class: 'muted', text: 'none' })),
    fact('tools', 'Tools', tools.length
      ? h('ul', { class: 'tool-names' }, tools.map((t) => h('li', {}, h('code', { text: t }))))
      : h('span', { class: 'muted', text: 'none' })),
    fact('system_prompt_sha256', 'Prompt SHA-256', config.system_prompt_sha256
      ? h('span', { class: 'mono wrap', title: 'SHA-256 of the system prompt the model was sent', text: config.system_prompt_sha256 })
      : h('span', { class: 'muted', text: 'unknown' })));
}

// ---- a session's settings ----
// The panel over the transcript that writes the session's `overrides` (model fields, extra
// instructions, capability toggles with their config forms) on top of its agent's
// configuration, with the agent form's own fields. Only what the user set is written: an empty
// field keeps the agent's value (shown as its placeholder); an agent's capability turned off
// is written as `{id, enabled: false}`, another one turned on as `{id, config}`, and an agent's
// capability left on carries a config only when the session's differs (edited here, or set
// before).

const ID_PREFIX = 'session-cap';

/** Whether `overrides` changes anything. */
function hasOverrides(overrides) {
  if (!overrides || typeof overrides !== 'object') return false;
  const model = overrides.model && Object.values(overrides.model).some((v) => v !== null && v !== undefined);
  return Boolean(model || (overrides.system_prompt_append || '').trim()
    || (Array.isArray(overrides.capabilities) && overrides.capabilities.length));
}

/**
 * The settings disclosure of `session` (whose agent is `agent`). Loads the installed
 * capabilities and providers the first time it is opened.
 */
function sessionSettings({ session, agent, signal }) {
  let current = session;
  const badge = h('span', { class: 'badge', id: 'session-overrides-badge' });
  const body = h('div', { class: 'session-settings-body' });
  const details = h('details', { class: 'session-settings', id: 'session-settings', dataset: { needs: 'operator' } },
    h('summary', {}, h('span', { class: 'summary-text', text: 'Session settings' }), ' ', badge),
    body);
  const showBadge = () => {
    const on = hasOverrides(current.overrides);
    badge.textContent = on ? 'custom' : '';
    badge.dataset.overrides = on ? 'true' : 'false';
    badge.title = on ? 'This conversation overrides some of the agent’s settings' : '';
  };
  showBadge();

  let capabilities = null;
  let providers = null;
  let loading = false;
  details.addEventListener('toggle', async () => {
    if (!details.open || capabilities || loading) return;
    loading = true;
    replace(body, h('p', { class: 'muted', text: 'Loading…' }));
    try {
      [capabilities, providers] = await Promise.all([
        api('GET', '/v1/capabilities', undefined, { signal }).then((r) => r.data),
        listAll('/v1/providers', { signal }).catch((err) => {
          // Without a providers API (or permission), the provider is typed by name.
          if (err instanceof ApiError && err.status === 404) return null;
          throw err;
        }),
      ]);
      build();
    } catch (err) {
      capabilities = null;
      if (!signal.aborted) replace(body, problemBox(err));
    } finally {
      loading = false;
    }
  });

  function build(message = null) {
    const overrides = current.overrides || {};
    const model = modelFields({ idPrefix: 'session', providers, value: overrides.model || {}, inherited: agent.model || {} });
    const append = h('textarea', {
      id: 'session-prompt-append', name: 'system_prompt_append', rows: 3,
      value: overrides.system_prompt_append || '',
      placeholder: 'Added after the agent’s system prompt for this conversation only',
    });

    // The agent's capabilities (on unless this session turned them off), then the other
    // loaded ones (off unless this session added them), then any this session names that are
    // no longer installed, so saving does not drop them unseen.
    const installed = new Map(capabilities.map((c) => [c.id, c]));
    const own = new Map((agent.capabilities || []).map((c) => [c.id, c.config]));
    const entries = new Map((overrides.capabilities || []).map((e) => [e.id, e]));
    const ids = [
      ...own.keys(),
      ...capabilities.filter((c) => c.status === 'loaded' && !own.has(c.id)).map((c) => c.id),
      ...[...entries.keys()].filter((id) => !own.has(id) && !(installed.get(id) && installed.get(id).status === 'loaded')),
    ];
    const choices = [...new Set(ids)].map((id) => {
      const entry = entries.get(id);
      const agentHas = own.has(id);
      const enabled = entry ? entry.enabled !== false : agentHas;
      const custom = Boolean(agentHas && entry && entry.enabled !== false && entry.config !== undefined && entry.config !== null);
      const configActions = [];
      let choice;
      if (agentHas) {
        const note = h('p', { class: 'muted small cap-config-note' });
        let isCustom = custom;
        const reset = h('button', {
          type: 'button', class: 'small secondary reset-config', text: 'Use the agent’s configuration',
          onclick: () => {
            isCustom = false;
            choice.reset(own.get(id));
            showNote();
          },
        });
        const showNote = () => {
          note.textContent = isCustom ? 'This conversation uses its own configuration.' : 'The agent’s configuration; edit it to use another one here.';
          reset.hidden = !isCustom;
        };
        showNote();
        configActions.push(note, reset);
        choice = capabilityChoice({
          id, capability: installed.get(id), checked: enabled, config: custom ? entry.config : own.get(id),
          idPrefix: ID_PREFIX, note: 'on the agent', configActions,
        });
        for (const type of ['input', 'change', 'click']) {
          choice.configBox.addEventListener(type, () => {
            if (!isCustom && choice.touched()) {
              isCustom = true;
              showNote();
            }
          });
        }
        return { id, agentHas, choice, custom: () => isCustom || choice.touched() };
      }
      choice = capabilityChoice({
        id, capability: installed.get(id), checked: enabled, config: entry && entry.config !== null ? entry.config : undefined,
        idPrefix: ID_PREFIX, note: 'not on the agent',
      });
      return { id, agentHas, choice, custom: () => true };
    });

    const status = h('div', { class: 'form-status', id: 'session-settings-status', role: 'status' }, message);
    const save = h('button', { type: 'submit', id: 'save-session-settings', text: 'Save settings' });
    const clear = h('button', {
      type: 'button', id: 'clear-session-settings', class: 'secondary', text: 'Clear overrides',
      disabled: !hasOverrides(current.overrides),
    });
    const form = h('form', { id: 'session-settings-form', class: 'form', novalidate: true },
      h('p', { class: 'muted small', text: 'For this conversation’s next runs. Empty fields keep the agent’s settings, shown greyed.' }),
      h('fieldset', { class: 'grid2' }, h('legend', { text: 'Model' }), model.element),
      h('div', { class: 'field', dataset: { overrideField: 'system_prompt_append' } },
        h('label', { for: 'session-prompt-append', text: 'Extra instructions' }), append),
      h('fieldset', { id: 'session-capabilities' }, h('legend', { text: 'Capabilities' }),
        choices.length ? choices.map((c) => c.choice.element) : h('p', { class: 'muted', text: 'No capabilities are installed.' })),
      status,
      h('div', { class: 'actions' }, save, clear));

    // The entries sent, in order: a server error names one by its position.
    let sent = [];
    const locate = (field) => {
      const m = /^overrides\.model\.(\w+)/.exec(field);
      if (m) return model.locate(m[1]);
      if (field.startsWith('overrides.system_prompt_append')) return append.closest('.field');
      const c = /^overrides\.capabilities\[(\d+)\](.*)$/.exec(field);
      const entry = c && sent[Number(c[1])];
      if (!entry) return null;
      const cfg = /^\.config(.*)$/.exec(c[2]);
      return (cfg && fieldOf(entry.choice.configBox, `${ID_PREFIX}-${entry.id}-cfg`, cfg[1]))
        || entry.choice.element.querySelector('.field.check');
    };
    const fail = (err) => {
      replace(status, problemBox(err));
      showFieldErrors(err.errors || [], locate);
    };
    const write = async (overrides, done) => {
      save.disabled = true;
      clear.disabled = true;
      try {
        current = await api('PATCH', `/v1/sessions/${encodeURIComponent(current.id)}`, { overrides }, { signal });
        showBadge();
        build(h('p', { class: 'ok', dataset: { saved: 'true' }, text: done }));
      } catch (err) {
        if (signal.aborted) return;
        fail(err);
        save.disabled = false;
        clear.disabled = !hasOverrides(current.overrides);
      }
    };

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      replace(status);
      const errors = [];
      const out = {};
      const modelOut = model.read(errors, 'overrides.model');
      if (Object.keys(modelOut).length) out.model = modelOut;
      if (append.value.trim()) out.system_prompt_append = append.value;
      sent = [];
      const caps = [];
      for (const c of choices) {
        const on = c.choice.checkbox.checked;
        let item = null;
        if (c.agentHas && !on) item = { id: c.id, enabled: false };
        else if (on && c.custom()) {
          const r = c.choice.read();
          r.errors.forEach((e) => errors.push({ field: `overrides.capabilities[${caps.length}].config.${e.field}`, message: e.message }));
          item = { id: c.id, config: r.value };
        }
        if (item) {
          caps.push(item);
          sent.push(c);
        }
      }
      if (caps.length) out.capabilities = caps;
      if (errors.length) {
        fail(new ApiError(422, { title: 'Some fields need fixing', errors }));
        return;
      }
      write(Object.keys(out).length ? out : null, 'Saved. The next run uses these settings.');
    });
    clear.addEventListener('click', () => {
      clearFieldErrors(form);
      write(null, 'Cleared. The next run uses the agent’s settings.');
    });
    replace(body, form);
  }

  return details;
}

export async function render(main, { params, signal, navigate }) {
  const sid = params[0] || null;
  const agentSelect = h('select', { id: 'agent-select', name: 'agent' });
  const sessionList = h('ul', { id: 'session-list', class: 'session-list' });
  const title = h('h1', { id: 'chat-title', text: 'New conversation' });
  const runStatus = h('span', { id: 'run-status', class: 'badge', dataset: { runStatus: '' } });
  const streamStatus = h('span', { id: 'stream-status', class: 'muted small', dataset: { state: '' } });
  const chatHead = h('header', { class: 'chat-head' }, title, runStatus, streamStatus);
  const transcriptEl = h('div', { id: 'transcript', class: 'transcript', 'aria-live': 'polite' });
  const input = h('textarea', { id: 'message-input', name: 'message', rows: 3, placeholder: 'Message the agent (Enter sends, Shift+Enter for a new line)' });
  const sendButton = h('button', { id: 'send', type: 'submit', text: 'Send' });
  const cancelButton = h('button', { id: 'cancel-run', type: 'button', class: 'danger', text: 'Cancel run', disabled: true });
  const composerStatus = h('div', { id: 'composer-status', class: 'form-status' });
  const composer = h('form', { id: 'composer', class: 'composer', dataset: { needs: 'operator' } }, input, h('div', { class: 'actions' }, sendButton, cancelButton), composerStatus);
  const readerNote = h('p', { id: 'reader-note', class: 'notice reader-only', text: 'This key is a reader: it can follow conversations, not send messages or decide approvals.' });
  const side = h('aside', { class: 'chat-side' },
    h('div', { class: 'field' }, h('label', { for: 'agent-select', text: 'Agent' }), agentSelect),
    h('button', { id: 'new-chat', type: 'button', class: 'secondary', text: 'New conversation', dataset: { needs: 'operator' }, onclick: () => navigate('#/chat') }),
    // On a phone the list folds away while a conversation is open.
    h('details', { class: 'sessions', open: !sid || window.matchMedia('(min-width: 900px)').matches },
      h('summary', {}, h('h2', { text: 'Conversations' })), sessionList));
  replace(main, h('div', { class: 'chat' }, side,
    h('section', { class: 'chat-main' }, chatHead, transcriptEl, readerNote, composer)));

  const onRunsChanged = (t) => {
    const active = t.activeRuns();
    const shown = t.latestRun ? t.runs.get(t.latestRun).status : '';
    runStatus.dataset.runStatus = shown;
    runStatus.className = `badge ${shown}`;
    runStatus.textContent = shown ? STATUS_TEXT[shown] || shown : '';
    cancelButton.disabled = active.length === 0;
  };
  // Which sessions have tool calls waiting for approval (GET /v1/approvals?status=pending):
  // marked in the list when it is rendered, and again when approval events arrive.
  let waiting = new Set();
  let marksAsked = 0;
  let marksTimer = null;
  function showMarks() {
    for (const li of sessionList.querySelectorAll('li[data-session-id]')) {
      const on = waiting.has(li.dataset.sessionId);
      if (on) li.dataset.waitingApproval = 'true';
      else delete li.dataset.waitingApproval;
      li.querySelector('.approval-badge').hidden = !on;
    }
  }
  async function refreshMarks() {
    const asked = ++marksAsked;
    try {
      const page = await api('GET', '/v1/approvals?status=pending&limit=200', undefined, { signal });
      if (asked !== marksAsked) return; // a later answer is coming
      waiting = new Set(page.data.map((a) => a.session_id));
      showMarks();
    } catch {
      // Only a hint: the list keeps its marks until the next refresh.
    }
  }
  const scheduleMarks = () => {
    if (marksTimer || signal.aborted) return;
    marksTimer = setTimeout(() => {
      marksTimer = null;
      if (!signal.aborted) refreshMarks();
    }, 100);
  };
  const transcript = sid ? new Transcript(transcriptEl, sid, onRunsChanged, scheduleMarks) : null;

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
  const sessionAgent = session && agents.find((a) => a.id === session.agent_id);
  if (sessionAgent) chatHead.append(sessionSettings({ session, agent: sessionAgent, signal }));

  async function loadSessions() {
    try {
      const sessions = await listAll(`/v1/sessions?agent_id=${encodeURIComponent(agentId)}`, { signal });
      replace(sessionList, sessions.reverse().map((s) => h('li', { dataset: { sessionId: s.id } },
        h('a', { href: `#/chat/${s.id}`, 'aria-current': s.id === sid ? 'page' : null },
          h('span', { class: 'session-title', text: s.title || 'Untitled conversation' }),
          h('span', { class: 'session-meta' },
            h('small', { class: 'muted', text: when(s.created_at) }),
            h('span', { class: 'badge waiting_approval approval-badge', text: 'approval needed', title: 'Tool calls wait for your approval', hidden: true }))))));
      if (!sessions.length) replace(sessionList, h('li', { class: 'muted', text: 'No conversations yet.' }));
      showMarks();
      refreshMarks();
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
