// A form generated from a plugin's config JSON Schema: string, number, integer, boolean, enum
// and arrays of those get real inputs (pre-filled from the current config, else the plugin's
// defaults, else the schema's `default`); anything else falls back to a JSON text area. Also
// one capability's choice in a form (its checkbox over its config form), as the agent form
// and a session's settings show it.

import { h, replace } from './dom.js';

const PRIMITIVES = new Set(['string', 'number', 'integer', 'boolean']);

function typeOf(schema) {
  if (!schema || typeof schema !== 'object') return null;
  if (Array.isArray(schema.enum) && schema.enum.every((v) => ['string', 'number', 'boolean'].includes(typeof v))) return 'enum';
  const t = Array.isArray(schema.type) ? schema.type.filter((x) => x !== 'null') : [schema.type];
  if (t.length !== 1) return null;
  if (PRIMITIVES.has(t[0])) return t[0];
  if (t[0] === 'array') {
    const item = typeOf(schema.items);
    if (item && item !== 'array' && item !== 'json') return 'array';
  }
  return null;
}

/**
 * Builds the form. Returns {element, read}: read() gives {value, errors[]} where errors name
 * the field (`greeting`, `hosts[2]`, ...).
 */
export function schemaForm(schema, defaults = {}, current = undefined, idPrefix = 'cfg') {
  const props = schema && schema.type === 'object' && schema.properties && typeof schema.properties === 'object'
    ? schema.properties : null;
  if (!schema) return jsonField('config', current ?? defaults ?? {}, `${idPrefix}-json`, 'Configuration (JSON object)', true);
  if (!props) return jsonField('config', current ?? defaults ?? {}, `${idPrefix}-json`, 'Configuration (JSON object; this schema has no simple form)', true);
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = Object.entries(props).map(([name, sub]) => {
    const initial = current && name in current ? current[name]
      : defaults && name in defaults ? defaults[name] : sub && sub.default;
    return { name, field: field(name, sub || {}, initial, required.has(name), `${idPrefix}-${name}`) };
  });
  const element = h('div', { class: 'schema-form' }, fields.map((f) => f.field.element));
  return {
    element,
    read() {
      const value = {};
      const errors = [];
      // Keys the form does not know (e.g. added through the API) are kept.
      if (current && typeof current === 'object') {
        for (const [k, v] of Object.entries(current)) if (!(k in props)) value[k] = v;
      }
      for (const { name, field: f } of fields) {
        const r = f.read();
        errors.push(...r.errors);
        if (r.value !== undefined) value[name] = r.value;
      }
      return { value, errors };
    },
  };
}

function label(name, schema, required, id) {
  return h('label', { for: id },
    schema.title || name,
    required ? h('span', { class: 'required', title: 'required', text: ' *' }) : null);
}

function help(schema) {
  return schema.description ? h('small', { class: 'help', text: schema.description }) : null;
}

function field(name, schema, initial, required, id) {
  const kind = typeOf(schema);
  if (kind === 'array') return arrayField(name, schema, initial, required, id);
  if (kind) {
    const input = primitiveInput(kind, schema, initial, id, required);
    const element = kind === 'boolean'
      ? h('div', { class: 'field check' }, input.element, label(name, schema, required, id), help(schema))
      : h('div', { class: 'field' }, label(name, schema, required, id), input.element, help(schema));
    return {
      element,
      read() {
        const r = input.read();
        if (r.error) return { errors: [{ field: name, message: r.error }] };
        if (r.value === undefined && required) return { errors: [{ field: name, message: 'is required' }] };
        return { value: r.value, errors: [] };
      },
    };
  }
  return jsonField(name, initial, id, schema.title || name, required, help(schema));
}

function primitiveInput(kind, schema, initial, id, required) {
  if (kind === 'boolean') {
    const el = h('input', { type: 'checkbox', id, name: id, checked: initial === true });
    return { element: el, read: () => ({ value: el.checked }) };
  }
  if (kind === 'enum') {
    const el = h('select', { id, name: id },
      required ? null : h('option', { value: '', text: '(not set)' }),
      schema.enum.map((v, n) => h('option', { value: String(n), text: String(v), selected: initial === v })));
    return { element: el, read: () => ({ value: el.value === '' ? undefined : schema.enum[Number(el.value)] }) };
  }
  if (kind === 'number' || kind === 'integer') {
    const el = h('input', {
      type: 'number', id, name: id, step: kind === 'integer' ? '1' : 'any',
      min: schema.minimum, max: schema.maximum,
      value: typeof initial === 'number' ? String(initial) : '',
    });
    return {
      element: el,
      read() {
        if (el.value.trim() === '') return { value: undefined };
        const n = Number(el.value);
        if (!Number.isFinite(n)) return { error: 'must be a number' };
        if (kind === 'integer' && !Number.isInteger(n)) return { error: 'must be a whole number' };
        return { value: n };
      },
    };
  }
  const long = (schema.maxLength ?? 0) > 200 || schema.format === 'textarea';
  const el = long
    ? h('textarea', { id, name: id, rows: 3, value: typeof initial === 'string' ? initial : '' })
    : h('input', { type: 'text', id, name: id, value: typeof initial === 'string' ? initial : '', placeholder: schema.examples ? String(schema.examples[0]) : null });
  return { element: el, read: () => ({ value: el.value === '' && !required ? undefined : el.value }) };
}

function arrayField(name, schema, initial, required, id) {
  const itemSchema = schema.items;
  const itemKind = typeOf(itemSchema);
  const rows = h('div', { class: 'array-rows' });
  const inputs = [];
  const addRow = (value) => {
    const input = primitiveInput(itemKind, itemSchema, value, `${id}-${inputs.length}`, true);
    const entry = { input };
    const row = h('div', { class: 'array-row' }, input.element,
      h('button', {
        type: 'button', class: 'small secondary', text: 'Remove', 'aria-label': `Remove item from ${name}`,
        onclick: () => { inputs.splice(inputs.indexOf(entry), 1); row.remove(); },
      }));
    inputs.push(entry);
    rows.append(row);
  };
  (Array.isArray(initial) ? initial : []).forEach(addRow);
  const element = h('fieldset', { class: 'field array', id },
    h('legend', {}, schema.title || name, required ? h('span', { class: 'required', text: ' *' }) : null),
    help(schema), rows,
    h('button', { type: 'button', class: 'small secondary', text: `Add ${itemKind === 'boolean' ? 'value' : 'item'}`, onclick: () => addRow(undefined) }));
  return {
    element,
    read() {
      const value = [];
      const errors = [];
      inputs.forEach(({ input }, n) => {
        const r = input.read();
        if (r.error) errors.push({ field: `${name}[${n}]`, message: r.error });
        else if (r.value !== undefined) value.push(r.value);
      });
      if (!value.length && !required && !Array.isArray(initial)) return { value: undefined, errors };
      return { value, errors };
    },
  };
}

function jsonField(name, initial, id, title, required, helpNode = null) {
  const el = h('textarea', {
    id, name: id, rows: 4, class: 'mono', spellcheck: 'false',
    value: initial === undefined ? '' : JSON.stringify(initial, null, 2),
  });
  const element = h('div', { class: 'field' }, h('label', { for: id, text: title }), el, helpNode);
  return {
    element,
    read() {
      if (el.value.trim() === '') {
        return required ? { value: name === 'config' ? {} : undefined, errors: name === 'config' ? [] : [{ field: name, message: 'is required' }] } : { value: undefined, errors: [] };
      }
      try {
        const value = JSON.parse(el.value);
        if (name === 'config' && (value === null || typeof value !== 'object' || Array.isArray(value))) {
          return { errors: [{ field: name, message: 'must be a JSON object' }] };
        }
        return { value, errors: [] };
      } catch (err) {
        return { errors: [{ field: name, message: `is not valid JSON: ${err.message}` }] };
      }
    },
  };
}

/**
 * The field named by an error path (`greeting`, `names[2]`, `.greeting`) in the form built
 * with id prefix `cfgPrefix` under `root`: its `.field` (or the array's fieldset), else null.
 */
export function fieldOf(root, cfgPrefix, rest) {
  const name = rest.replace(/^\./, '').split(/[.[]/)[0];
  if (!name) return null;
  const el = root.querySelector(`#${CSS.escape(`${cfgPrefix}-${name}`)}`)
    || root.querySelector(`#${CSS.escape(`${cfgPrefix}-json`)}`);
  return el ? el.closest('.field') : null;
}

// One capability in a form (an agent's, or a session's settings): a checkbox naming it, and
// under it, while checked, its config form generated from the plugin's JSON Schema.

/**
 * `capability` is the installed plugin (from GET /v1/capabilities), or undefined when it is
 * not installed (its config is then edited as JSON). Ids: the checkbox `${idPrefix}-${id}`,
 * the config fields `${idPrefix}-${id}-cfg-...`. `note` is shown after the description;
 * `configActions` (nodes) below the config form.
 * Returns {id, checkbox, element, configBox, read(), touched(), reset(config)}: read() gives
 * the config form's {value, errors}; touched() whether the user changed the config since it
 * was built; reset() rebuilds the config form from `config`.
 */
export function capabilityChoice({ id, capability, checked, config, idPrefix = 'cap', note = null, configActions = [] }) {
  const cid = `${idPrefix}-${id}`;
  const checkbox = h('input', { type: 'checkbox', id: cid, name: 'capability', value: id, checked });
  const configBox = h('div', { class: 'cap-config', hidden: !checked });
  let form;
  let touched = false;
  const build = (current) => {
    form = schemaForm(capability ? capability.config_schema : null, (capability && capability.config_defaults) || {}, current, `${cid}-cfg`);
    replace(configBox, form.element, configActions);
    touched = false;
  };
  build(config);
  const touch = (event) => {
    // Typing, picking, and the array rows' Add/Remove buttons; not the extra actions.
    if (event.type === 'click' && !(event.target instanceof HTMLButtonElement && form.element.contains(event.target))) return;
    touched = true;
  };
  for (const type of ['input', 'change', 'click']) configBox.addEventListener(type, touch);
  checkbox.addEventListener('change', () => { configBox.hidden = !checkbox.checked; });
  let status = null;
  if (!capability) status = h('span', { class: 'badge failed', text: 'not installed' });
  else if (capability.status !== 'loaded') status = h('span', { class: 'badge failed', text: 'not loaded' });
  const element = h('div', { class: 'cap-choice', dataset: { capability: id } },
    h('div', { class: 'field check' }, checkbox,
      h('label', { for: cid }, h('strong', { text: id }),
        capability && capability.description ? h('span', { class: 'muted', text: ` — ${capability.description}` }) : null),
      note ? h('span', { class: 'muted small cap-note', text: note }) : null,
      status),
    configBox);
  return {
    id,
    checkbox,
    element,
    configBox,
    read: () => form.read(),
    touched: () => touched,
    reset(current) {
      build(current);
    },
  };
}
