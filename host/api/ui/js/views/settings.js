// Settings: LLM providers (add, edit, test; the API key is write-only, only its hint is shown),
// API keys (a new key is shown once; revoke) and secrets for plugins (set, delete; values are
// never shown).

import { ApiError, api, can, listAll, me, problemBox } from '../api.js';
import { h, replace, when } from '../dom.js';

export async function render(main, { signal }) {
  if (!can('admin')) {
    replace(main, h('div', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', { text: 'Settings' })),
      h('p', { id: 'settings-denied', class: 'notice', text: `Providers, API keys and secrets are managed with an admin key. This key (${me().name}) is ${me().role === 'reader' ? 'a reader' : 'an operator'}.` })));
    return;
  }
  const providers = h('section', { id: 'providers', class: 'settings-section' });
  const keys = h('section', { id: 'api-keys', class: 'settings-section' });
  const secrets = h('section', { id: 'secrets', class: 'settings-section' });
  replace(main, h('div', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', { text: 'Settings' })), providers, keys, secrets));
  await Promise.all([providerSection(providers, signal), keySection(keys, signal), secretSection(secrets, signal)]);
}

const field = (id, label, input, hint) => h('div', { class: 'field' }, h('label', { for: id, text: label }), input, hint ? h('small', { class: 'help', text: hint }) : null);

// ---- providers -------------------------------------------------------------------------

const BASE_URLS = { openai: 'https://api.openai.com/v1', anthropic: 'https://api.anthropic.com/v1' };

async function providerSection(section, signal) {
  const list = h('div', { id: 'provider-list', class: 'cards' });
  const formSlot = h('div');
  const status = h('div', { class: 'form-status' });
  replace(section,
    h('div', { class: 'section-head' }, h('h2', { text: 'LLM providers' }),
      h('button', { type: 'button', id: 'add-provider', text: 'Add provider', onclick: () => showForm(null) })),
    h('p', { class: 'muted', text: 'OpenAI-compatible servers (OpenAI, Ollama, vLLM, OpenRouter, …) or Anthropic. Keys are encrypted at rest and never shown again.' }),
    status, formSlot, list);

  function showForm(provider) {
    replace(status);
    replace(formSlot, providerForm(provider, {
      // Refresh the list first: when the form goes away, the list already shows the change.
      onDone: async () => { await load(); replace(formSlot); },
      onCancel: () => replace(formSlot),
    }));
    formSlot.querySelector('input').focus();
  }

  async function load() {
    try {
      const providers = await listAll('/v1/providers', { signal });
      if (!providers.length) {
        replace(list, h('p', { class: 'empty muted', text: 'No providers yet. Agents use the server\'s configured provider, if any.' }));
        return;
      }
      replace(list, providers.map((p) => {
        const result = h('div', { class: 'test-result', 'aria-live': 'polite' });
        return h('article', { class: 'card provider', dataset: { providerId: p.id, providerName: p.name } },
          h('div', { class: 'card-head' }, h('h3', { text: p.name }), h('span', { class: 'badge', text: p.kind })),
          h('dl', { class: 'facts' },
            h('dt', { text: 'Base URL' }), h('dd', { class: 'wrap', text: p.base_url }),
            h('dt', { text: 'API key' }), h('dd', { class: 'mono key-hint', text: p.api_key_hint || '(none)' }),
            h('dt', { text: 'Default model' }), h('dd', { text: p.default_model || '(none)' }),
            h('dt', { text: 'Models' }), h('dd', { text: (p.models || []).join(', ') || '(none)' }),
            h('dt', { text: 'Updated' }), h('dd', { text: when(p.updated_at) })),
          h('div', { class: 'actions' },
            h('button', {
              type: 'button', class: 'secondary test-provider', text: 'Test connection',
              onclick: async (event) => {
                event.target.disabled = true;
                replace(result, h('span', { class: 'muted', text: 'Testing…' }));
                try {
                  const r = await api('POST', `/v1/providers/${p.id}/test`);
                  replace(result, r.ok
                    ? h('div', { class: 'ok', dataset: { ok: 'true' } }, h('strong', { text: 'Connection OK.' }),
                      r.models && r.models.length ? ` Models: ${r.models.join(', ')}` : '')
                    : problemBox(new ApiError(0, { title: 'The provider answered with an error', detail: r.error || 'unknown error' })));
                  if (!r.ok) result.firstChild.dataset.ok = 'false';
                } catch (err) {
                  replace(result, problemBox(err));
                } finally {
                  event.target.disabled = false;
                }
              },
            }),
            h('button', { type: 'button', class: 'secondary', text: 'Edit', onclick: () => showForm(p) }),
            h('button', {
              type: 'button', class: 'danger', text: 'Delete',
              onclick: async () => {
                if (!window.confirm(`Delete provider “${p.name}”? Agents using it will fail until they use another.`)) return;
                try {
                  await api('DELETE', `/v1/providers/${p.id}`);
                  load();
                } catch (err) {
                  replace(status, problemBox(err));
                }
              },
            })),
          result);
      }));
    } catch (err) {
      if (!signal.aborted) replace(list, problemBox(err));
    }
  }
  await load();
}

function providerForm(p, { onDone, onCancel }) {
  const name = h('input', { id: 'provider-name', name: 'name', required: true, value: p ? p.name : '', autocomplete: 'off' });
  const kind = h('select', { id: 'provider-kind', name: 'kind' },
    ['openai', 'anthropic'].map((k) => h('option', { value: k, text: k === 'openai' ? 'OpenAI-compatible' : 'Anthropic', selected: p ? p.kind === k : k === 'openai' })));
  const baseUrl = h('input', { id: 'provider-base-url', name: 'base_url', type: 'url', required: true, value: p ? p.base_url : '', placeholder: BASE_URLS.openai });
  kind.addEventListener('change', () => { baseUrl.placeholder = BASE_URLS[kind.value]; });
  // Write-only: never pre-filled; empty on edit keeps the stored key.
  const key = h('input', {
    id: 'provider-api-key', name: 'api_key', type: 'password', autocomplete: 'new-password', spellcheck: 'false',
    placeholder: p ? `unchanged (${p.api_key_hint || 'no key'})` : 'sk-…',
  });
  const defaultModel = h('input', { id: 'provider-default-model', name: 'default_model', value: p && p.default_model ? p.default_model : '' });
  const models = h('input', { id: 'provider-models', name: 'models', value: p && p.models ? p.models.join(', ') : '', placeholder: 'gpt-4o-mini, gpt-4o' });
  const status = h('div', { class: 'form-status' });
  const save = h('button', { type: 'submit', id: 'save-provider', text: p ? 'Save provider' : 'Add provider' });
  const form = h('form', { id: 'provider-form', class: 'card form' },
    h('h3', { text: p ? `Edit ${p.name}` : 'New provider' }),
    h('div', { class: 'grid2' },
      field('provider-name', 'Name', name),
      field('provider-kind', 'Kind', kind),
      field('provider-base-url', 'Base URL (with the API version, e.g. …/v1)', baseUrl),
      field('provider-api-key', 'API key', key, p ? 'Leave empty to keep the current key.' : 'Stored encrypted; only its last characters are ever shown. Empty for servers that need none.'),
      field('provider-default-model', 'Default model', defaultModel),
      field('provider-models', 'Models (comma-separated)', models)),
    status,
    h('div', { class: 'actions' }, save, h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: () => { key.value = ''; onCancel(); } })));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {
      name: name.value.trim(),
      kind: kind.value,
      base_url: baseUrl.value.trim(),
      models: models.value.split(',').map((m) => m.trim()).filter(Boolean),
    };
    if (defaultModel.value.trim()) body.default_model = defaultModel.value.trim();
    else if (p) body.default_model = null;
    // On edit, an empty field keeps the stored key.
    if (key.value || !p) body.api_key = key.value;
    save.disabled = true;
    replace(status);
    try {
      if (p) await api('PATCH', `/v1/providers/${p.id}`, body);
      else await api('POST', '/v1/providers', body);
      key.value = '';
      await onDone();
    } catch (err) {
      replace(status, problemBox(err));
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

// ---- API keys ----------------------------------------------------------------------------

async function keySection(section, signal) {
  const list = h('ul', { id: 'api-key-list', class: 'rows' });
  const status = h('div', { class: 'form-status' });
  const reveal = h('div', { id: 'new-api-key-slot' });
  const name = h('input', { id: 'api-key-name', name: 'name', required: true, maxlength: 100, placeholder: 'e.g. ci' });
  const role = h('select', { id: 'api-key-role', name: 'role' },
    h('option', { value: 'operator', text: 'operator: agents, sessions, runs', selected: true }),
    h('option', { value: 'reader', text: 'reader: look only' }),
    h('option', { value: 'admin', text: 'admin: everything' }));
  const form = h('form', { id: 'api-key-form', class: 'inline-form' }, field('api-key-name', 'New key name', name), field('api-key-role', 'Role', role), h('button', { type: 'submit', text: 'Create key' }));
  replace(section, h('div', { class: 'section-head' }, h('h2', { text: 'API keys' })), form, status, reveal, list);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(status);
    try {
      const created = await api('POST', '/v1/api-keys', { name: name.value.trim(), role: role.value });
      name.value = '';
      const keyText = h('code', { id: 'new-api-key', class: 'secret-once', text: created.key });
      replace(reveal, h('div', { class: 'card once' },
        h('strong', { text: `Key “${created.name}” created. Copy it now: it will not be shown again.` }),
        keyText,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', text: 'Copy', onclick: () => navigator.clipboard && navigator.clipboard.writeText(created.key) }),
          h('button', { type: 'button', class: 'secondary', text: 'Done', onclick: () => replace(reveal) }))));
      load();
    } catch (err) {
      replace(status, problemBox(err));
    }
  });

  async function load() {
    try {
      const keys = await listAll('/v1/api-keys', { signal });
      replace(list, keys.map((k) => h('li', { class: `row${k.revoked_at ? ' revoked' : ''}`, dataset: { keyId: k.id } },
        h('div', { class: 'row-main' },
          h('strong', { text: k.name }), ' ', h('span', { class: 'badge', text: k.role }), ' ', h('code', { text: `${k.prefix}…` }),
          h('small', { class: 'muted block', text: `created ${when(k.created_at)}${k.last_used_at ? ` · last used ${when(k.last_used_at)}` : ''}` })),
        k.revoked_at ? h('span', { class: 'badge failed', text: 'revoked' })
          : h('button', {
            type: 'button', class: 'danger small', text: 'Revoke',
            onclick: async () => {
              if (!window.confirm(`Revoke key “${k.name}”? Requests using it are refused from now on.`)) return;
              try {
                await api('DELETE', `/v1/api-keys/${k.id}`);
                load();
              } catch (err) {
                replace(status, problemBox(err));
              }
            },
          }))));
    } catch (err) {
      if (!signal.aborted) replace(list, h('li', {}, problemBox(err)));
    }
  }
  await load();
}

// ---- secrets -----------------------------------------------------------------------------

async function secretSection(section, signal) {
  const list = h('ul', { id: 'secret-list', class: 'rows' });
  const status = h('div', { class: 'form-status' });
  const name = h('input', { id: 'secret-name', name: 'name', required: true, autocomplete: 'off', placeholder: 'e.g. weather_api_key' });
  const value = h('input', { id: 'secret-value', name: 'value', type: 'password', required: true, autocomplete: 'new-password', spellcheck: 'false' });
  const form = h('form', { id: 'secret-form', class: 'inline-form' },
    field('secret-name', 'Name', name), field('secret-value', 'Value', value), h('button', { type: 'submit', text: 'Set secret' }));
  replace(section, h('div', { class: 'section-head' }, h('h2', { text: 'Secrets' })),
    h('p', { class: 'muted', text: 'Named values that plugins granted the secret can read. Setting an existing name replaces its value. Values are never shown.' }),
    form, status, list);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    replace(status);
    try {
      await api('PUT', `/v1/secrets/${encodeURIComponent(name.value.trim())}`, { value: value.value });
      value.value = '';
      name.value = '';
      load();
    } catch (err) {
      replace(status, problemBox(err));
    }
  });

  async function load() {
    try {
      const secrets = await listAll('/v1/secrets', { signal });
      if (!secrets.length) {
        replace(list, h('li', { class: 'muted', text: 'No secrets.' }));
        return;
      }
      replace(list, secrets.map((s) => h('li', { class: 'row', dataset: { secret: s.name } },
        h('div', { class: 'row-main' }, h('code', { text: s.name }), h('small', { class: 'muted block', text: `updated ${when(s.updated_at)}` })),
        h('button', {
          type: 'button', class: 'danger small', text: 'Delete',
          onclick: async () => {
            if (!window.confirm(`Delete secret “${s.name}”?`)) return;
            try {
              await api('DELETE', `/v1/secrets/${encodeURIComponent(s.name)}`);
              load();
            } catch (err) {
              replace(status, problemBox(err));
            }
          },
        }))));
    } catch (err) {
      if (!signal.aborted) replace(list, h('li', {}, problemBox(err)));
    }
  }
  await load();
}
