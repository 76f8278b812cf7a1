// Agents: list, create, edit (system prompt, provider and model, capabilities with a config
// form generated from each plugin's JSON Schema) and archive.

import { ApiError, api, listAll, problemBox } from '../api.js';
import { h, replace, when } from '../dom.js';
import { schemaForm } from '../schema_form.js';

export async function render(main, { params, signal, navigate }) {
  if (params[0]) return editor(main, params[0] === 'new' ? null : params[0], { signal, navigate });
  return list(main, { signal });
}

async function list(main, { signal }) {
  const body = h('div', { id: 'agent-list', class: 'cards' }, h('p', { class: 'muted', text: 'Loading…' }));
  const status = h('div', { class: 'form-status' });
  replace(main, h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', { text: 'Agents' }), h('a', { href: '#/agents/new', class: 'button', id: 'new-agent', text: 'New agent' })),
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
          h('dt', { text: 'Updated' }), h('dd', { text: when(a.updated_at) })),
        h('div', { class: 'actions' },
          a.archived ? null : h('a', { href: `#/chat`, class: 'button secondary', text: 'Chat', onclick: () => sessionStorage.setItem('everruns.chat.agent', a.id) }),
          h('a', { href: `#/agents/${a.id}`, class: 'button secondary', text: 'Edit' }),
          h('button', {
            type: 'button', class: a.archived ? 'secondary' : 'danger', text: a.archived ? 'Unarchive' : 'Archive',
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
  const model = agent ? agent.model : {};
  const name = h('input', { id: 'agent-name', name: 'name', required: true, maxlength: 200, value: agent ? agent.name : '' });
  const prompt = h('textarea', { id: 'agent-prompt', name: 'system_prompt', rows: 6, value: agent ? agent.system_prompt : '' });
  const modelInput = h('input', { id: 'agent-model', name: 'model', list: 'agent-model-options', value: model.model || '', placeholder: 'provider default' });
  const modelOptions = h('datalist', { id: 'agent-model-options' });
  let providerInput;
  if (providers) {
    const known = providers.some((p) => p.name === model.provider || p.id === model.provider);
    providerInput = h('select', { id: 'agent-provider', name: 'provider' },
      h('option', { value: '', text: 'Server default' }),
      providers.map((p) => h('option', { value: p.name, text: `${p.name} (${p.kind})`, selected: p.name === model.provider || p.id === model.provider })),
      model.provider && !known ? h('option', { value: model.provider, text: `${model.provider} (not configured)`, selected: true }) : null);
    const fillModels = () => {
      const p = providers.find((x) => x.name === providerInput.value);
      const names = p ? [...new Set([p.default_model, ...(p.models || [])].filter(Boolean))] : [];
      replace(modelOptions, names.map((m) => h('option', { value: m })));
      modelInput.placeholder = p && p.default_model ? `default: ${p.default_model}` : 'provider default';
    };
    providerInput.addEventListener('change', fillModels);
    fillModels();
  } else {
    providerInput = h('input', { id: 'agent-provider', name: 'provider', value: model.provider || '', placeholder: 'server default' });
  }
  const number = (idName, value, attrs) => h('input', { id: idName, name: idName, type: 'number', value: value ?? '', ...attrs });
  const temperature = number('agent-temperature', model.temperature, { min: 0, max: 2, step: 'any' });
  const maxTokens = number('agent-max-tokens', model.max_tokens, { min: 1, step: 1 });
  const maxSteps = number('agent-max-steps', model.max_steps, { min: 1, max: 1000, step: 1 });

  // Capabilities: every loaded plugin, checked if the agent has it, with its config form.
  const enabled = new Map((agent ? agent.capabilities : []).map((c) => [c.id, c.config]));
  const capEntries = capabilities.filter((c) => c.status === 'loaded' || enabled.has(c.id)).map((c) => {
    const checkbox = h('input', { type: 'checkbox', id: `cap-${c.id}`, name: 'capability', value: c.id, checked: enabled.has(c.id) });
    const form = schemaForm(c.config_schema, c.config_defaults || {}, enabled.get(c.id), `cap-${c.id}-cfg`);
    const config = h('div', { class: 'cap-config', hidden: !checkbox.checked }, form.element);
    checkbox.addEventListener('change', () => { config.hidden = !checkbox.checked; });
    const element = h('div', { class: 'cap-choice', dataset: { capability: c.id } },
      h('div', { class: 'field check' }, checkbox,
        h('label', { for: `cap-${c.id}` }, h('strong', { text: c.id }), c.description ? h('span', { class: 'muted', text: ` — ${c.description}` }) : null),
        c.status !== 'loaded' ? h('span', { class: 'badge failed', text: 'not loaded' }) : null),
      config);
    return { id: c.id, checkbox, form, element };
  });

  const status = h('div', { class: 'form-status', id: 'agent-form-status' });
  const save = h('button', { type: 'submit', id: 'save-agent', text: agent ? 'Save changes' : 'Create agent' });
  // The server checks every field and names the bad ones; the browser's own checks would only
  // hide that behind a tooltip.
  const form = h('form', { id: 'agent-form', class: 'card form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'agent-name', text: 'Name' }), name),
    h('div', { class: 'field' }, h('label', { for: 'agent-prompt', text: 'System prompt' }), prompt),
    h('fieldset', { class: 'grid2' }, h('legend', { text: 'Model' }),
      h('div', { class: 'field' }, h('label', { for: 'agent-provider', text: 'Provider' }), providerInput),
      h('div', { class: 'field' }, h('label', { for: 'agent-model', text: 'Model' }), modelInput, modelOptions),
      h('div', { class: 'field' }, h('label', { for: 'agent-temperature', text: 'Temperature (0–2)' }), temperature),
      h('div', { class: 'field' }, h('label', { for: 'agent-max-tokens', text: 'Max tokens per answer' }), maxTokens),
      h('div', { class: 'field' }, h('label', { for: 'agent-max-steps', text: 'Max steps per run' }), maxSteps)),
    h('fieldset', { id: 'agent-capabilities' }, h('legend', { text: 'Capabilities' }),
      capEntries.length ? capEntries.map((c) => c.element)
        : h('p', { class: 'muted' }, 'No capabilities are installed. ', h('a', { href: '#/capabilities', text: 'See capabilities' }))),
    status,
    h('div', { class: 'actions' }, save, h('a', { href: '#/agents', class: 'button secondary', text: 'Back to agents' })));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const errors = [];
    const num = (input, field) => {
      if (input.value.trim() === '') return undefined;
      const n = Number(input.value);
      if (!Number.isFinite(n)) errors.push({ field, message: 'must be a number' });
      return n;
    };
    const modelBody = {};
    if (providerInput.value.trim()) modelBody.provider = providerInput.value.trim();
    if (modelInput.value.trim()) modelBody.model = modelInput.value.trim();
    const t = num(temperature, 'model.temperature');
    if (t !== undefined) modelBody.temperature = t;
    const mt = num(maxTokens, 'model.max_tokens');
    if (mt !== undefined) modelBody.max_tokens = mt;
    const ms = num(maxSteps, 'model.max_steps');
    if (ms !== undefined) modelBody.max_steps = ms;
    const caps = [];
    capEntries.filter((c) => c.checkbox.checked).forEach((c) => {
      const r = c.form.read();
      r.errors.forEach((e) => errors.push({ field: `capabilities[${c.id}].config.${e.field}`, message: e.message }));
      caps.push({ id: c.id, config: r.value });
    });
    if (errors.length) {
      replace(status, problemBox(new ApiError(422, { title: 'Some fields need fixing', errors })));
      return;
    }
    const body = { name: name.value, system_prompt: prompt.value, model: modelBody, capabilities: caps };
    save.disabled = true;
    replace(status);
    try {
      const saved = agent ? await api('PATCH', `/v1/agents/${agent.id}`, body) : await api('POST', '/v1/agents', body);
      if (!agent) sessionStorage.setItem('everruns.chat.agent', saved.id);
      navigate('#/agents');
    } catch (err) {
      replace(status, problemBox(err));
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
