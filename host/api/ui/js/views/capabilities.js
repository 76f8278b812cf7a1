// Capabilities: the installed plugins, their status and load errors, tools with their argument
// schemas, granted permissions and limits.

import { api, problemBox } from '../api.js';
import { h, pretty, replace } from '../dom.js';

export async function render(main, { signal }) {
  const body = h('div', { id: 'capability-list', class: 'cards' }, h('p', { class: 'muted', text: 'Loading…' }));
  replace(main, h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', { text: 'Capabilities' })), body));
  let caps;
  try {
    caps = (await api('GET', '/v1/capabilities', undefined, { signal })).data;
  } catch (err) {
    if (!signal.aborted) replace(body, problemBox(err));
    return;
  }
  if (!caps.length) {
    replace(body, h('p', { class: 'empty muted', text: 'No capabilities are installed. Put plugins in the server\'s plugins directory or run `everruns plugin install PATH`.' }));
    return;
  }
  replace(body, caps.map(card));
}

function card(c) {
  const p = c.permissions;
  return h('article', { class: `card capability ${c.status}`, dataset: { capability: c.id, status: c.status } },
    h('div', { class: 'card-head' },
      h('h2', { text: c.id }),
      c.version ? h('span', { class: 'muted', text: `v${c.version}` }) : null,
      h('span', { class: `badge ${c.status === 'loaded' ? 'completed' : 'failed'}`, text: c.status })),
    c.description ? h('p', { text: c.description }) : null,
    c.error ? h('div', { class: 'problem' }, h('strong', { text: c.status === 'loaded' ? 'Latest change rejected' : 'Failed to load' }), h('pre', { text: c.error })) : null,
    p ? h('dl', { class: 'facts' },
      h('dt', { text: 'Outgoing HTTP' }), h('dd', { text: p.allowed_hosts.length ? p.allowed_hosts.join(', ') : 'none' }),
      h('dt', { text: 'Secrets' }), h('dd', { text: p.secrets.length ? p.secrets.join(', ') : 'none' }),
      h('dt', { text: 'Key-value state' }), h('dd', { text: p.kv ? `per ${p.kv}` : 'none' }),
      h('dt', { text: 'Private networks' }), h('dd', { text: p.allow_private_networks ? 'allowed' : 'denied' }),
      c.limits ? [
        h('dt', { text: 'Limits' }),
        h('dd', { text: `${c.limits.memory_mib} MiB, ${c.limits.timeout_ms} ms per call${c.limits.fuel ? `, ${c.limits.fuel} fuel` : ''}` }),
      ] : null,
      c.digest ? [h('dt', { text: 'Digest' }), h('dd', { class: 'mono wrap', text: c.digest })] : null) : null,
    c.tools.length ? h('div', { class: 'tools' },
      h('h3', { text: `Tools (${c.tools.length})` }),
      c.tools.map((t) => h('details', { class: 'tool-spec', dataset: { tool: t.name } },
        h('summary', {}, h('code', { text: t.name }), t.description ? ` — ${t.description}` : ''),
        h('pre', { text: pretty(t.parameters) })))) : null,
    c.config_schema ? h('details', { class: 'config-schema' },
      h('summary', { text: 'Configuration schema' }),
      h('pre', { text: pretty(c.config_schema) }),
      c.config_defaults && Object.keys(c.config_defaults).length ? [h('div', { class: 'muted', text: 'Defaults' }), h('pre', { text: pretty(c.config_defaults) })] : null) : null);
}
