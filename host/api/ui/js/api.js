// The API client: every call carries the API key as `Authorization: Bearer`, never in a URL;
// errors become ApiError with the server's RFC 9457 problem details, shown readably (a box,
// and each field's message next to that field).

import { h } from './dom.js';

const KEY_STORAGE = 'everruns.apiKey';

/** The signed-in API key (kept in sessionStorage: gone when the tab closes). */
export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

const ROLE_STORAGE = 'everruns.me';
const RANKS = { reader: 0, operator: 1, admin: 2 };

/** The signed-in key as `/v1/me` described it ({id, name, role}), once asked for. */
export function me() {
  try {
    return JSON.parse(sessionStorage.getItem(ROLE_STORAGE));
  } catch {
    return null;
  }
}

/** Asks the server who the signed-in key is (its role decides what the UI offers). */
export async function loadMe(signal) {
  const who = await api('GET', '/v1/me', undefined, { signal });
  sessionStorage.setItem(ROLE_STORAGE, JSON.stringify(who));
  return who;
}

/** Whether the signed-in key's role reaches `needed` (`reader` < `operator` < `admin`). */
export function can(needed) {
  const who = me();
  return !!who && RANKS[who.role] >= RANKS[needed];
}

/** Forgets the key and everything remembered for this tab. */
export function signOut() {
  sessionStorage.clear();
}

/** An API failure: HTTP status plus the problem document (title, detail, errors[]). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || '';
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

/** Reads a failed response into an ApiError, whatever its body is. */
export async function problemOf(response) {
  let problem = {};
  const text = await response.text().catch(() => '');
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === 'object') problem = parsed;
  } catch {
    // Not a problem document (a proxy's error page, say): its markup is not worth showing.
    problem = { detail: `The server answered ${response.status} ${response.statusText}.`.replace(' .', '.') };
  }
  if (!problem.title) problem.title = response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, problem);
}

function networkError(err) {
  return new ApiError(0, {
    title: 'The server could not be reached',
    detail: `${err && err.message ? err.message : err}. Check that Everruns is running and try again.`,
  });
}

/** Request headers with the key; `extra` adds more. */
export function authHeaders(extra = {}) {
  const headers = new Headers(extra);
  const key = apiKey();
  if (key) headers.set('Authorization', `Bearer ${key}`);
  return headers;
}

/** fetch() with the key; network failures become ApiError (aborts are rethrown as is). */
export async function send(path, init = {}) {
  try {
    return await fetch(path, {
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      ...init,
      headers: authHeaders(init.headers || {}),
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw networkError(err);
  }
}

/**
 * Calls the API and returns the parsed JSON (null for 204). A 401 signs the user out
 * (the `everruns:unauthorized` event) before throwing.
 */
export async function api(method, path, body, { signal, headers = {} } = {}) {
  const init = { method, signal, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  if (!response.ok) {
    const err = await problemOf(response);
    if (response.status === 401) window.dispatchEvent(new CustomEvent('everruns:unauthorized', { detail: err }));
    throw err;
  }
  if (response.status === 204) return null;
  return response.json();
}

/** Every item of a paginated list (`{data, next_cursor}`), up to `max`. */
export async function listAll(path, { max = 1000, signal } = {}) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const url = `${path}${sep}limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await api('GET', url, undefined, { signal });
    items.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/** A readable box for an error: title, detail and one line per invalid field. */
export function problemBox(err) {
  const e = err instanceof ApiError ? err : new ApiError(0, { title: 'Something went wrong', detail: String(err && err.message ? err.message : err) });
  return h('div', { class: 'problem', role: 'alert' },
    h('strong', { text: e.title }),
    e.detail && !e.errors.length ? h('p', { text: e.detail }) : null,
    e.errors.length
      ? h('ul', {}, e.errors.map((f) => h('li', {}, h('code', { text: f.field }), ` ${f.message}`)))
      : null,
  );
}

// A problem's field errors are also shown next to the fields they name: the message under the
// field, its control marked `aria-invalid` and described by the message.

let fieldErrorCount = 0;

/**
 * For each {field, message}, `locate(field)` gives the element holding that field (a `.field`
 * or a fieldset) or null; the message goes at its end. Returns how many were placed.
 */
export function showFieldErrors(errors, locate) {
  let placed = 0;
  for (const { field, message } of errors) {
    const target = field ? locate(field) : null;
    if (!target) continue;
    fieldErrorCount += 1;
    const id = `field-error-${fieldErrorCount}`;
    target.append(h('p', { class: 'field-error', id, dataset: { field }, text: message }));
    const control = target.querySelector('input:not([type=checkbox]), select, textarea') || target.querySelector('input');
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      const described = control.getAttribute('aria-describedby');
      control.setAttribute('aria-describedby', described ? `${described} ${id}` : id);
    }
    placed += 1;
  }
  return placed;
}

/** Removes every message showFieldErrors placed under `root`. */
export function clearFieldErrors(root) {
  for (const el of root.querySelectorAll('.field-error')) el.remove();
  for (const el of root.querySelectorAll('[aria-invalid]')) {
    el.removeAttribute('aria-invalid');
    const rest = (el.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && !x.startsWith('field-error-'));
    if (rest.length) el.setAttribute('aria-describedby', rest.join(' '));
    else el.removeAttribute('aria-describedby');
  }
}
