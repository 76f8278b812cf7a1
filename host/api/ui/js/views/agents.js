// Agents: list, create, edit (system prompt, provider and model, capabilities with a config
// form generated from each plugin's JSON Schema, which tool calls need a person's approval)
// and archive.

import { ApiError, api, clearFieldErrors, listAll, problemBox, showFieldErrors } from '../api.js';
import { h, replace, when } from '../dom.js';
import { capabilityChoice, fieldOf } from '../schema_form.js';

export async function render(main, { params, signal, navigate }) {
  if (params[0]) return editor(main, params[0] === 'new' ? null : params[0], { signal, navigate });
  return list(main, { signal });
}

async function list(main, { signal }) {
  const body = h('div', { id: 'agent-list', class: 'cards' }, h('p', { class: 'muted', text: 'Loading…' }));
  const status = h('div', { class: 'form-status' });
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', { text: 'Agents' }), h('a', { href: '#/agents/new', class: 'button', id: 'new-agent', text: 'New agent', dataset: { needs: 'operator' } })),
    h('p', { class: 'notice reader-only', text: 'This key is a reader: it can look at agents, not create or change them.' }),
    status, body));
  const load = async () => {
    try {
      const agents = await listAll('/v1/agents', { signal });
      if (!agents.length) {
        replace(body, h('p', { class: 'empty muted', text: 'No agents yet. Create one to start chatting.' }));
        return;
      }
      replace(body, agents.map((a) => h('article', { class: `card agent${a.archived ? ' archived' : ''}`, dataset: { agentId: a.id, agentName: a.name } },
        h('div', { class: 'card-head' },
          h('h2', { text: a.name }),
          a.archived ? h('span', { class: 'badge', text: 'archived' }) : null),
        h('p', { class: 'muted clamp', text: a.system_prompt || '(no system prompt)' }),
        h('dl', { class: 'facts' },
          h('dt', { text: 'Model' }), h('dd', { text: modelText(a.model) }),
          h('dt', { text: 'Capabilities' }), h('dd', { text: a.capabilities.map((c) => c.id).join(', ') || 'none' }),
          h('dt', { text: 'Tool approval' }), h('dd', { dataset: { fact: 'tool_approval' }, text: approvalText(a.tool_approval) }),
          h('dt', { text: 'Updated' }), h('dd', { text: when(a.updated_at) })),
        h('div', { class: 'actions' },
          a.archived ? null : h('a', { href: `#/chat`, class: 'button secondary', text: 'Chat', onclick: () => sessionStorage.setItem('everruns.chat.agent', a.id) }),
          h('a', { href: `#/agents/${a.id}`, class: 'button secondary', text: 'Edit', dataset: { needs: 'operator' } }),
          h('button', {
            type: 'button', class: a.archived ? 'secondary' : 'danger', text: a.archived ? 'Unarchive' : 'Archive', dataset: { needs: 'operator' },
            onclick: async () => {
              if (!a.archived && !window.confirm(`Archive agent “${a.name}”? It stays readable but takes no new conversations.`)) return;
              try {
                await api('PATCH', `/v1/agents/${a.id}`, { archived: !a.archived });
                load();
              } catch (err) {
                replace(status, problemBox(err));
              }
            },
          })))));
    } catch (err) {
      if (!signal.aborted) replace(body, problemBox(err));
    }
  };
  await load();
}

function modelText(model) {
  const provider = model.provider || 'server default provider';
  return `${provider} · ${model.model || 'default model'}`;
}

function approvalText(policy) {
  if (!policy) return 'none';
  const patterns = (policy.require || []).join(', ') || 'no patterns';
  return policy.timeout_seconds ? `${patterns} (waits ${policy.timeout_seconds} s)` : patterns;
}

/** Approval patterns as typed: one per line or comma separated; blanks dropped. */
function splitPatterns(text) {
  return text
    .split(/[\n\r,]/)
    .map((p) => p.trim())
    .filter(Boolean);
}

async function editor(main, id, { signal, navigate }) {
  replace(main, h('p', { class: 'muted', text: 'Loading…' }));
  let agent = null;
  let capabilities = [];
  let providers = null;
  try {
    [agent, capabilities] = await Promise.all([
      id ? api('GET', `/v1/agents/${encodeURIComponent(id)}`, undefined, { signal }) : null,
      api('GET', '/v1/capabilities', undefined, { signal }).then((r) => r.data),
    ]);
    providers = await listAll('/v1/providers', { signal }).catch((err) => {
      // Without a providers API (or permission), the provider is typed by name.
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    });
  } catch (err) {
    if (!signal.aborted) replace(main, problemBox(err));
    return;
  }
  const name = h('input', { id: 'agent-name', name: 'name', required: true, maxlength: 200, value: agent ? agent.name : '' });
  const prompt = h('textarea', { id: 'agent-prompt', name: 'system_prompt', rows: 6, value: agent ? agent.system_prompt : '' });
  const model = modelFields({ idPrefix: 'agent', providers, value: agent ? agent.model : {} });

  // Capabilities: every loaded plugin, checked if the agent has it, with its config form.
  const enabled = new Map((agent ? agent.capabilities : []).map((c) => [c.id, c.config]));
  const capEntries = capabilities.filter((c) => c.status === 'loaded' || enabled.has(c.id))
    .map((c) => capabilityChoice({ id: c.id, capability: c, checked: enabled.has(c.id), config: enabled.get(c.id) }));

  // Tool approval: glob patterns over namespaced tool names, and how long a call waits.
  const policy = agent && agent.tool_approval;
  const approvalPatterns = h('textarea', {
    id: 'agent-approval-patterns', name: 'tool_approval_require', rows: 2, class: 'mono',
    value: policy ? (policy.require || []).join('\n') : '', placeholder: 'e.g. session_files__delete_*, *__send_mail',
    'aria-describedby': 'agent-approval-help',
  });
  const approvalTimeout = h('input', {
    id: 'agent-approval-timeout', name: 'tool_approval_timeout', type: 'number', min: 1, max: 604800, step: 1,
    value: policy && policy.timeout_seconds ? policy.timeout_seconds : '', placeholder: '900',
  });
  const approvalField = (name) => (name === 'timeout_seconds' ? approvalTimeout : approvalPatterns).closest('.field');

  const status = h('div', { class: 'form-status', id: 'agent-form-status' });
  const save = h('button', { type: 'submit', id: 'save-agent', text: agent ? 'Save changes' : 'Create agent' });
  // The server checks every field and names the bad ones; the browser's own checks would only
  // hide that behind a tooltip.
  const form = h('form', { id: 'agent-form', class: 'card form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'agent-name', text: 'Name' }), name),
    h('div', { class: 'field' }, h('label', { for: 'agent-prompt', text: 'System prompt' }), prompt),
    h('fieldset', { class: 'grid2' }, h('legend', { text: 'Model' }), model.element),
    h('fieldset', { id: 'agent-capabilities' }, h('legend', { text: 'Capabilities' }),
      capEntries.length ? capEntries.map((c) => c.element)
        : h('p', { class: 'muted' }, 'No capabilities are installed. ', h('a', { href: '#/capabilities', text: 'See capabilities' }))),
    h('fieldset', { id: 'agent-tool-approval', class: 'grid2' }, h('legend', { text: 'Tool approval' }),
      h('p', { id: 'agent-approval-help', class: 'muted small full', text: 'A tool call whose name (capability__tool) matches one of these glob patterns (* any run of characters, ? one character) waits in the chat until someone approves or rejects it; unanswered, it counts as rejected.' }),
      h('div', { class: 'field', dataset: { approvalField: 'require' } },
        h('label', { for: 'agent-approval-patterns', text: 'Patterns (one per line or comma separated)' }), approvalPatterns),
      h('div', { class: 'field', dataset: { approvalField: 'timeout_seconds' } },
        h('label', { for: 'agent-approval-timeout', text: 'Seconds to wait for a decision' }), approvalTimeout)),
    status,
    h('div', { class: 'actions' }, save, h('a', { href: '#/agents', class: 'button secondary', text: 'Back to agents' })));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const errors = [];
    const modelBody = model.read(errors, 'model');
    // Named like the server names them: by position in the list sent.
    const sent = capEntries.filter((c) => c.checkbox.checked);
    const caps = sent.map((c, n) => {
      const r = c.read();
      r.errors.forEach((e) => errors.push({ field: `capabilities[${n}].config.${e.field}`, message: e.message }));
      return { id: c.id, config: r.value };
    });
    // No patterns: no policy (omitted on create, removed on edit).
    const require = splitPatterns(approvalPatterns.value);
    let toolApproval = null;
    const timeoutText = approvalTimeout.value.trim();
    if (require.length) {
      toolApproval = { require };
      if (timeoutText) {
        const n = Number(timeoutText);
        if (!Number.isInteger(n)) errors.push({ field: 'tool_approval.timeout_seconds', message: 'must be a whole number of seconds' });
        else toolApproval.timeout_seconds = n;
      }
    }
    clearFieldErrors(form);
    const locate = (field) => {
      if (field === 'name') return name.closest('.field');
      if (field === 'system_prompt') return prompt.closest('.field');
      const m = /^model\.(\w+)/.exec(field);
      if (m) return model.locate(m[1]);
      const a = /^tool_approval(?:\.(\w+))?/.exec(field);
      if (a) return approvalField(a[1]);
      const c = /^capabilities\[(\d+)\](.*)$/.exec(field);
      const entry = c && sent[Number(c[1])];
      if (!entry) return null;
      const cfg = /^\.config(.*)$/.exec(c[2]);
      return (cfg && fieldOf(entry.configBox, `cap-${entry.id}-cfg`, cfg[1])) || entry.element.querySelector('.field.check');
    };
    const fail = (err) => {
      replace(status, problemBox(err));
      showFieldErrors(err.errors || [], locate);
    };
    if (errors.length) {
      fail(new ApiError(422, { title: 'Some fields need fixing', errors }));
      return;
    }
    const body = { name: name.value, system_prompt: prompt.value, model: modelBody, capabilities: caps };
    if (toolApproval) body.tool_approval = toolApproval;
    else if (agent) body.tool_approval = null;
    save.disabled = true;
    replace(status);
    try {
      const saved = agent ? await api('PATCH', `/v1/agents/${agent.id}`, body) : await api('POST', '/v1/agents', body);
      if (!agent) sessionStorage.setItem('everruns.chat.agent', saved.id);
      navigate('#/agents');
    } catch (err) {
      fail(err);
    } finally {
      save.disabled = false;
    }
  });

  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', { text: agent ? `Edit ${agent.name}` : 'New agent' }),
      agent ? h('span', { class: 'muted small mono', text: agent.id }) : null),
    form));
  name.focus();
}

// The model settings fields (provider, model, temperature, max tokens, max steps), also used by
// a session's settings (chat.js). An empty field is left out of what read() gives: on an agent
// it means the provider's or server's default, on a session the agent's value (shown as the
// placeholder).

/**
 * Builds the fields with ids `${idPrefix}-provider`, `-model`, `-temperature`, `-max-tokens`,
 * `-max-steps`. `providers` is the configured providers (null: the provider is typed by
 * name); `value` the settings to show; `inherited` the settings an empty field falls back to
 * (the agent's, for a session), shown as placeholders.
 * Returns {element, read(errors, fieldPrefix), locate(name)}: read() gives the set fields and
 * pushes {field, message} for each unreadable one onto `errors`, named
 * `${fieldPrefix}.temperature`...; locate() the `.field` of `temperature`, ... (or null).
 */
export function modelFields({ idPrefix, providers, value = {}, inherited = null }) {
  const ids = {
    provider: `${idPrefix}-provider`,
    model: `${idPrefix}-model`,
    options: `${idPrefix}-model-options`,
    temperature: `${idPrefix}-temperature`,
    maxTokens: `${idPrefix}-max-tokens`,
    maxSteps: `${idPrefix}-max-steps`,
  };
  const from = inherited || {};
  const modelInput = h('input', { id: ids.model, name: 'model', list: ids.options, value: value.model || '' });
  const modelOptions = h('datalist', { id: ids.options });
  const defaultProvider = inherited
    ? `Agent's: ${from.provider || 'server default'}`
    : 'Server default';
  let providerInput;
  let fillModels;
  if (providers) {
    const known = providers.some((p) => p.name === value.provider || p.id === value.provider);
    providerInput = h('select', { id: ids.provider, name: 'provider' },
      h('option', { value: '', text: defaultProvider }),
      providers.map((p) => h('option', { value: p.name, text: `${p.name} (${p.kind})`, selected: p.name === value.provider || p.id === value.provider })),
      value.provider && !known ? h('option', { value: value.provider, text: `${value.provider} (not configured)`, selected: true }) : null);
    // The model names offered are those of the provider in effect (the inherited one when
    // none is chosen).
    fillModels = () => {
      const name = providerInput.value || from.provider || '';
      const p = providers.find((x) => x.name === name || x.id === name);
      const names = p ? [...new Set([p.default_model, ...(p.models || [])].filter(Boolean))] : [];
      replace(modelOptions, names.map((m) => h('option', { value: m })));
      if (inherited && from.model && !providerInput.value) modelInput.placeholder = `agent's: ${from.model}`;
      else modelInput.placeholder = p && p.default_model ? `default: ${p.default_model}` : 'provider default';
    };
    providerInput.addEventListener('change', fillModels);
  } else {
    providerInput = h('input', { id: ids.provider, name: 'provider', value: value.provider || '', placeholder: inherited ? defaultProvider.toLowerCase() : 'server default' });
    fillModels = () => {
      modelInput.placeholder = inherited && from.model ? `agent's: ${from.model}` : 'provider default';
    };
  }
  fillModels();

  const inheritedText = (v, fallback) => (inherited ? (v === undefined || v === null ? fallback : `agent's: ${v}`) : null);
  const number = (id, name, current, attrs, placeholder) => h('input', {
    id, name, type: 'number', value: current ?? '', placeholder, ...attrs,
  });
  const temperature = number(ids.temperature, 'temperature', value.temperature, { min: 0, max: 2, step: 'any' },
    inheritedText(from.temperature, 'provider default'));
  const maxTokens = number(ids.maxTokens, 'max_tokens', value.max_tokens, { min: 1, step: 1 },
    inheritedText(from.max_tokens, 'provider default'));
  const maxSteps = number(ids.maxSteps, 'max_steps', value.max_steps, { min: 1, max: 1000, step: 1 },
    inheritedText(from.max_steps, 'server default'));

  const element = [
    h('div', { class: 'field', dataset: { modelField: 'provider' } }, h('label', { for: ids.provider, text: 'Provider' }), providerInput),
    h('div', { class: 'field', dataset: { modelField: 'model' } }, h('label', { for: ids.model, text: 'Model' }), modelInput, modelOptions),
    h('div', { class: 'field', dataset: { modelField: 'temperature' } }, h('label', { for: ids.temperature, text: 'Temperature (0–2)' }), temperature),
    h('div', { class: 'field', dataset: { modelField: 'max_tokens' } }, h('label', { for: ids.maxTokens, text: 'Max tokens per answer' }), maxTokens),
    h('div', { class: 'field', dataset: { modelField: 'max_steps' } }, h('label', { for: ids.maxSteps, text: 'Max steps per run' }), maxSteps),
  ];

  return {
    element,
    locate: (name) => element.find((el) => el.dataset.modelField === name) || null,
    read(errors, fieldPrefix = 'model') {
      const out = {};
      const num = (input, name) => {
        if (input.value.trim() === '') return;
        const n = Number(input.value);
        if (!Number.isFinite(n)) errors.push({ field: `${fieldPrefix}.${name}`, message: 'must be a number' });
        else out[name] = n;
      };
      if (providerInput.value.trim()) out.provider = providerInput.value.trim();
      if (modelInput.value.trim()) out.model = modelInput.value.trim();
      num(temperature, 'temperature');
      num(maxTokens, 'max_tokens');
      num(maxSteps, 'max_steps');
      return out;
    },
  };
}
