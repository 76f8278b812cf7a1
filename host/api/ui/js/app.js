// The web UI's entry point: hash routing (#/chat, #/chat/<session>, #/agents, #/agents/<id>,
// #/capabilities, #/settings), the signed-in state and the global error banner.

import { apiKey, loadMe, me, problemBox, signOut } from './api.js';
import { replace } from './dom.js';
import * as agents from './views/agents.js';
import * as capabilities from './views/capabilities.js';
import * as chat from './views/chat.js';
import * as settings from './views/settings.js';
import * as signin from './views/signin.js';

const VIEWS = { chat, agents, capabilities, settings };

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const banner = document.getElementById('banner');
const whoami = document.getElementById('whoami');

// What the signed-in key may do: the body's `data-role` hides controls marked
// `data-needs="operator"` from readers (app.css), and the top bar says which key this is.
function showRole(who) {
  document.body.dataset.role = who.role;
  whoami.textContent = `${who.name} · ${who.role}`;
  whoami.title = {
    admin: 'This key may do everything.',
    operator: 'This key works with agents, sessions and runs; providers, secrets and API keys need an admin key.',
    reader: 'This key may only look: changing anything needs an operator or admin key.',
  }[who.role] || '';
}
let current = null; // AbortController of the view on screen

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function showSignIn(reason) {
  if (current) current.abort();
  current = new AbortController();
  nav.hidden = true;
  signin.render(main, {
    reason,
    onSignedIn: () => {
      nav.hidden = false;
      navigate(location.hash && location.hash !== '#/' ? location.hash : '#/chat');
    },
  });
}

async function route() {
  banner.hidden = true;
  if (!apiKey()) {
    showSignIn(null);
    return;
  }
  let who = me();
  if (!who) {
    try {
      who = await loadMe();
    } catch (err) {
      if (!apiKey()) return; // a 401 already went back to sign-in
      replace(banner, problemBox(err));
      banner.hidden = false;
      return;
    }
  }
  showRole(who);
  nav.hidden = false;
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a malformed escape: keep it as typed
    }
  };
  const [name, ...params] = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decode);
  const view = VIEWS[name] ? name : 'chat';
  for (const link of nav.querySelectorAll('a[data-view]')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  Promise.resolve(VIEWS[view].render(main, { params, signal: controller.signal, navigate })).catch((err) => {
    if (controller.signal.aborted) return;
    replace(banner, problemBox(err));
    banner.hidden = false;
  });
}

document.getElementById('signout').addEventListener('click', () => {
  signOut();
  showSignIn(null);
});

// Any 401 (key revoked, server reset): back to sign-in, saying why.
window.addEventListener('everruns:unauthorized', (event) => {
  if (!apiKey()) return; // already signing in
  signOut();
  showSignIn(event.detail);
});

window.addEventListener('hashchange', route);
route();
