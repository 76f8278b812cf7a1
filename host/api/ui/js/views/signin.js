// Sign-in: the API key is checked against the server, then kept in sessionStorage only.

import { ApiError, api, problemBox, setApiKey } from '../api.js';
import { h, replace } from '../dom.js';

export function render(main, { reason, onSignedIn }) {
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', required: true,
    spellcheck: 'false', placeholder: 'evr_…',
  });
  const status = h('div', { class: 'form-status' });
  const button = h('button', { type: 'submit', text: 'Sign in' });
  const form = h('form', { class: 'card signin', id: 'signin-form' },
    h('h1', { text: 'Sign in to Everruns' }),
    h('p', { class: 'muted', text: 'Paste an API key. It stays in this browser tab only and is sent as an Authorization header.' }),
    reason ? problemBox(reason) : null,
    h('div', { class: 'field' }, h('label', { for: 'api-key', text: 'API key' }), input),
    status,
    h('div', { class: 'actions' }, button),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    replace(status, h('span', { class: 'muted', text: 'Checking…' }));
    try {
      // Checked before it is kept, so a wrong key is never stored.
      await api('GET', '/v1/agents?limit=1', undefined, { headers: { Authorization: `Bearer ${key}` } });
      input.value = '';
      setApiKey(key);
      onSignedIn();
    } catch (err) {
      const shown = err instanceof ApiError && err.status === 401
        ? new ApiError(401, { title: 'That API key was not accepted', detail: err.detail })
        : err;
      replace(status, problemBox(shown));
      button.disabled = false;
    }
  });
  replace(main, form);
  input.focus();
  return () => {};
}
