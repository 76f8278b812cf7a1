// End-to-end test of the Everruns web UI in headless Chromium (Debian's `chromium`, driven by
// playwright-core). Started by host/server/tests/browser.rs, which runs the real server with
// the well-behaved test plugin and a scripted fake LLM, and passes in:
//   EVERRUNS_URL, EVERRUNS_API_KEY   the server and its admin key
//   FAKE_LLM_BASE_URL, FAKE_LLM_API_KEY   the fake provider (OpenAI wire format)
//   CHROMIUM   the browser executable (default /usr/bin/chromium)
//   E2E_SCREENSHOTS   optional directory for screenshots
// Exits 0 when every step passed; prints one line per step.

import { strict as assert } from 'node:assert';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through host/server/tests/browser.rs`);
  return value;
};
const BASE = env('EVERRUNS_URL');
const API_KEY = env('EVERRUNS_API_KEY');
const LLM_URL = env('FAKE_LLM_BASE_URL');
const LLM_KEY = env('FAKE_LLM_API_KEY');
const SECRET_VALUE = 'e2e-secret-value-7f3a9c';
const SHOTS = process.env.E2E_SCREENSHOTS || '';
const TIMEOUT = 30_000;

// What the fake model answers (host/server/tests/browser.rs scripts the same words).
const GREETING_REPLY = 'The plugin said: Howdy, Ada! **Done**.';
const STORY_WORDS = Array.from({ length: 40 }, (_, n) => `w${String(n + 1).padStart(2, '0')}`);
const STORY = `Once upon a time ${STORY_WORDS.join(' ')} the end.`;

let passed = 0;
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
  } catch (err) {
    console.log(`not ok - ${name} (${Date.now() - started} ms)`);
    throw err;
  }
  passed += 1;
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in a container: Chromium's own sandbox needs user namespaces it may not have.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});

/** Response bodies the page received, console errors, and SSE requests it made. */
function watch(page, log) {
  page.on('dialog', (dialog) => dialog.accept());
  page.on('console', (msg) => {
    // The browser logs every 4xx it got; the steps that provoke them check what the user sees.
    if (msg.type() === 'error' && !/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) {
      log.errors.push(`console: ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => log.errors.push(`page error: ${err.message}`));
  page.on('request', (request) => {
    const headers = request.headers();
    if (request.url().startsWith(BASE)) {
      assert.ok(!request.url().includes(API_KEY), `the API key appeared in a URL: ${request.url()}`);
    }
    if (headers.accept === 'text/event-stream') log.streams.push({ url: request.url(), lastEventId: headers['last-event-id'] || null });
  });
  page.on('response', async (response) => {
    if (!response.url().startsWith(BASE)) return;
    const type = response.headers()['content-type'] || '';
    if (type.startsWith('text/event-stream')) return; // endless; its events are checked from the JSON log
    const pending = response.text().then((body) => log.bodies.push({ url: response.url(), body }), () => {});
    log.pending.push(pending);
  });
}

const log = { errors: [], streams: [], bodies: [], pending: [] };
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
// On every page load, record each text a streaming answer shows (to see it grow, and never
// repeat itself).
await context.addInitScript(() => {
  window.partials = [];
  document.addEventListener('DOMContentLoaded', () => {
    new MutationObserver(() => {
      for (const body of document.querySelectorAll('.msg.assistant[data-streaming] .body')) {
        if (body.textContent && window.partials.at(-1) !== body.textContent) window.partials.push(body.textContent);
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
});
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
watch(page, log);

/** Waits until `fn` (run in the page) returns something truthy; returns it. */
const until = (fn, arg) => page.waitForFunction(fn, arg, { timeout: TIMEOUT, polling: 50 }).then((h) => h.jsonValue());

/** GET an API path with the admin key (what the server stored, independent of the page). */
async function apiGet(path) {
  const response = await page.request.get(BASE + path, { headers: { Authorization: `Bearer ${API_KEY}` } });
  assert.equal(response.status(), 200, `GET ${path}: ${await response.text()}`);
  return response.json();
}

/** `value` without its null members (the server may spell an absent field either way). */
const compact = (value) => (Array.isArray(value) ? value.map(compact)
  : value && typeof value === 'object'
    ? Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, compact(v)]))
    : value);

async function signIn(p) {
  await p.goto(BASE + '/');
  await p.fill('#api-key', API_KEY);
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#nav:not([hidden])');
}

try {
  await step('the page is served with a strict CSP and security headers', async () => {
    const response = await page.goto(BASE + '/');
    const h = response.headers();
    assert.equal(response.status(), 200);
    assert.match(h['content-type'], /^text\/html/);
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"]) {
      assert.ok(h['content-security-policy'].includes(directive), `CSP lacks ${directive}: ${h['content-security-policy']}`);
    }
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.equal(h['referrer-policy'], 'no-referrer');
    assert.ok(h.etag, 'no ETag');
    const again = await page.request.get(BASE + '/ui/js/app.js', { headers: { 'If-None-Match': (await page.request.get(BASE + '/ui/js/app.js')).headers().etag } });
    assert.equal(again.status(), 304);
  });

  await step('a wrong API key is refused readably, the right one signs in', async () => {
    await page.fill('#api-key', 'evr_wrong_key_0000000000000000');
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('.problem:has-text("not accepted")');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everruns.apiKey')), null);
    await page.fill('#api-key', API_KEY);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#nav:not([hidden])');
    assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing is kept in localStorage');
  });

  await step('add a provider pointing at the fake LLM; its key is never shown', async () => {
    await page.click('#nav a[data-view=settings]');
    await page.click('#add-provider');
    await page.fill('#provider-name', 'fake');
    await page.selectOption('#provider-kind', 'openai');
    await page.fill('#provider-base-url', LLM_URL);
    await page.fill('#provider-api-key', LLM_KEY);
    await page.fill('#provider-default-model', 'fake-model');
    await page.fill('#provider-models', 'fake-model, fake-model-large');
    await page.click('#save-provider');
    const card = page.locator('.provider[data-provider-name=fake]');
    await card.waitFor();
    assert.equal((await card.locator('.key-hint').textContent()).trim(), `…${LLM_KEY.slice(-4)}`);
    assert.equal(await page.locator('#provider-form').count(), 0, 'the form is gone (and the key with it)');
    await card.locator('.test-provider').click();
    await card.locator('.test-result .ok[data-ok=true]').waitFor();
    assert.match(await card.locator('.test-result').textContent(), /fake-model/);
    await shot(page, 'settings-wide');
  });

  await step('edit the provider without retyping its key', async () => {
    const card = page.locator('.provider[data-provider-name=fake]');
    await card.locator('button:has-text("Edit")').click();
    assert.equal(await page.inputValue('#provider-api-key'), '', 'the key is never filled in');
    assert.ok((await page.getAttribute('#provider-api-key', 'placeholder')).includes(LLM_KEY.slice(-4)));
    await page.fill('#provider-models', 'fake-model');
    await page.click('#save-provider');
    await page.locator('#provider-form').waitFor({ state: 'detached' });
    assert.equal((await card.locator('dt:has-text("Models") + dd').textContent()).trim(), 'fake-model');
    assert.equal((await card.locator('.key-hint').textContent()).trim(), `…${LLM_KEY.slice(-4)}`);
  });

  await step('create an agent; its capability is configured through a form generated from the schema', async () => {
    await page.goto(BASE + '/#/agents/new');
    await page.fill('#agent-name', 'greeter');
    await page.fill('#agent-prompt', 'You greet people.');
    await page.selectOption('#agent-provider', 'fake');
    await page.fill('#agent-model', 'fake-model');
    await page.check('#cap-well-behaved');
    const cfg = '#cap-well-behaved-cfg';
    assert.equal(await page.inputValue(`${cfg}-greeting`), 'hello', 'the default is filled in');
    await page.fill(`${cfg}-greeting`, 'Howdy');
    await page.selectOption(`${cfg}-style`, { label: 'fancy' });
    await page.fill(`${cfg}-repeat`, '7');
    await page.check(`${cfg}-loud`);
    await page.click(`${cfg}-names button:has-text("Add item")`);
    await page.fill(`${cfg}-names-0`, 'Ada');
    await page.fill(`${cfg}-extra`, '{"a": 1}');
    await page.fill('#agent-temperature', '5');
    await page.click('#save-agent');
    // The server's problem+json names each bad field.
    const problem = page.locator('#agent-form-status .problem');
    await problem.locator('code:has-text("model.temperature")').waitFor();
    await problem.locator('code:has-text("capabilities[0].config.repeat")').waitFor();
    await page.fill('#agent-temperature', '');
    await page.fill(`${cfg}-repeat`, '2');
    await page.click('#save-agent');
    const card = page.locator('.agent[data-agent-name=greeter]');
    await card.waitFor();
    assert.match(await card.textContent(), /well-behaved/);
    assert.match(await card.textContent(), /fake · fake-model/);
    const agent = await page.evaluate(async (key) => {
      const r = await fetch('/v1/agents', { headers: { Authorization: `Bearer ${key}` } });
      return (await r.json()).data.find((a) => a.name === 'greeter');
    }, API_KEY);
    assert.deepEqual(agent.capabilities, [{ id: 'well-behaved', config: { greeting: 'Howdy', style: 'fancy', repeat: 2, loud: true, names: ['Ada'], extra: { a: 1 } } }]);
  });

  let sessionUrl;
  await step('chat: the answer streams token by token, with the tool call and its result inline', async () => {
    await page.click('#nav a[data-view=chat]');
    await page.selectOption('#agent-select', { label: 'greeter' });
    await page.fill('#message-input', 'Please greet Ada <img src=x onerror=alert(1)>');
    await page.press('#message-input', 'Enter');
    await page.waitForURL(/#\/chat\/ses_/);
    sessionUrl = page.url();
    const tool = page.locator('.tool[data-state=completed]');
    await tool.waitFor();
    assert.match(await tool.locator('.tool-name').textContent(), /greet/);
    assert.match(await tool.locator('.tool-result').textContent(), /Howdy, Ada!/);
    await page.waitForSelector('#run-status[data-run-status=completed]');
    // Seen while streaming: growing partial answers before the whole one.
    const partials = (await page.evaluate(() => window.partials)).filter((p) => p.startsWith('The plugin'));
    assert.ok(partials.length >= 3, `the answer did not stream: ${JSON.stringify(partials)}`);
    assert.ok(partials.every((p, n) => n === 0 || p.length >= partials[n - 1].length), JSON.stringify(partials));
    assert.ok(partials[0].length < 'The plugin said: Howdy, Ada! Done.'.length, JSON.stringify(partials));
    const answer = page.locator('.msg.assistant').last();
    assert.equal((await answer.locator('.body').textContent()).trim(), 'The plugin said: Howdy, Ada! Done.');
    assert.equal(await answer.locator('strong').textContent(), 'Done', 'markdown is rendered');
    // The user's text is text, not markup.
    assert.match(await page.locator('.msg.user .body').first().textContent(), /<img src=x onerror=alert\(1\)>/);
    assert.equal(await page.locator('#transcript img').count(), 0);
    await shot(page, 'chat-wide');
  });

  await step('unsafe markdown from the model stays inert', async () => {
    await page.fill('#message-input', 'Show me links');
    await page.press('#message-input', 'Enter');
    const answer = page.locator('.msg.assistant:has-text("bad link")');
    await answer.waitFor();
    await page.waitForSelector('#run-status[data-run-status=completed]');
    const links = await answer.locator('a').evaluateAll((as) => as.map((a) => ({ href: a.getAttribute('href'), rel: a.rel, target: a.target })));
    assert.deepEqual(links, [{ href: 'https://example.com/docs', rel: 'noopener noreferrer', target: '_blank' }]);
    assert.equal(await answer.locator('img, script').count(), 0);
    assert.match(await answer.textContent(), /<script>alert\(1\)<\/script>/);
  });

  await step('reloading mid-run resumes the stream where it was, without repeating text', async () => {
    await page.fill('#message-input', 'Tell me a story');
    await page.press('#message-input', 'Enter');
    await until(() => {
      const m = [...document.querySelectorAll('.msg.assistant[data-streaming] .body')].pop();
      return m && / w05/.test(m.textContent);
    });
    const before = await page.evaluate(() => [...document.querySelectorAll('.msg.assistant .body')].pop().textContent);
    assert.ok(!before.includes('the end.'), 'the run should still be going');
    const streamsBefore = log.streams.length;
    await page.reload();
    await page.waitForSelector('#run-status[data-run-status=completed]', { timeout: 60_000 });
    const resumed = log.streams.slice(streamsBefore);
    assert.ok(resumed.length >= 1 && resumed[0].lastEventId && Number(resumed[0].lastEventId) > 0,
      `after the reload the stream resumed with Last-Event-ID: ${JSON.stringify(resumed)}`);
    const story = await page.evaluate(() => [...document.querySelectorAll('.msg.assistant .body')].pop().textContent.trim());
    assert.equal(story, STORY);
    // After the reload: the text seen before, then more of it as it streamed on; never a word
    // twice (the final message.completed would hide that, so check every step on the way).
    const after = (await page.evaluate(() => window.partials)).filter((p) => p.startsWith('Once upon'));
    assert.ok(after.length >= 2, `the run did not visibly continue after the reload: ${JSON.stringify(after)}`);
    assert.ok(after[0].length >= before.trim().length - 1, `the reload lost text: ${JSON.stringify([before, after[0]])}`);
    for (const partial of after) assert.ok(STORY.startsWith(partial.trim()), `repeated or wrong text while streaming: ${partial}`);
    // The whole conversation is there once: each answer exactly once.
    const answers = await page.locator('.msg.assistant').allTextContents();
    assert.equal(answers.filter((a) => a.includes('Once upon a time')).length, 1);
    assert.equal(answers.filter((a) => a.includes('Howdy, Ada!')).length, 1);
    assert.equal(await page.locator('.tool').count(), 1);
  });

  await step('cancel a run and see it cancelled', async () => {
    await page.fill('#message-input', 'Please wait forever');
    await page.press('#message-input', 'Enter');
    await until(() => {
      const m = [...document.querySelectorAll('.msg.assistant[data-streaming] .body')].pop();
      return m && m.textContent.includes('Thinking');
    });
    await page.waitForSelector('#run-status[data-run-status=running]');
    await page.click('#cancel-run');
    await page.waitForSelector('#run-status[data-run-status=cancelled]');
    await page.locator('.run[data-status=cancelled]').last().waitFor();
    assert.ok(await page.locator('#cancel-run').isDisabled());
  });

  await step('session settings: override the model, turn a capability off, chat; each run shows its effective config', async () => {
    const sid = sessionUrl.split('/').pop();
    await page.click('#session-settings > summary');
    await page.waitForSelector('#session-settings-form');
    // Nothing is overridden yet: the agent's values are what empty fields mean.
    assert.equal(await page.inputValue('#session-model'), '');
    assert.match(await page.getAttribute('#session-model', 'placeholder'), /fake-model/);
    assert.ok(await page.isChecked('#session-cap-well-behaved'), "the agent's capability is on");
    assert.ok(await page.isDisabled('#clear-session-settings'));
    // A bad value: the server's 422 names the field, and the message sits by that field.
    await page.fill('#session-temperature', '5');
    await page.click('#save-session-settings');
    await page.locator('#session-settings-status .problem code:has-text("overrides.model.temperature")').waitFor();
    await page.locator('[data-model-field=temperature] .field-error').waitFor();
    assert.equal(await page.getAttribute('#session-temperature', 'aria-invalid'), 'true');
    assert.equal(compact((await apiGet(`/v1/sessions/${sid}`)).overrides ?? null), null, 'nothing is stored on a 422');
    await page.fill('#session-temperature', '0.3');
    await page.fill('#session-model', 'fake-model-2');
    await page.uncheck('#session-cap-well-behaved');
    await page.click('#save-session-settings');
    await page.locator('#session-settings-status [data-saved=true]').waitFor();
    assert.equal(await page.locator('#session-settings-form .field-error').count(), 0);
    assert.equal((await page.textContent('#session-overrides-badge')).trim(), 'custom');
    // Only what was set is written.
    assert.deepEqual(compact((await apiGet(`/v1/sessions/${sid}`)).overrides), {
      model: { model: 'fake-model-2', temperature: 0.3 },
      capabilities: [{ id: 'well-behaved', enabled: false }],
    });
    // After a reload the panel shows the session's overrides.
    await page.reload();
    await page.click('#session-settings > summary');
    await page.waitForSelector('#session-settings-form');
    assert.equal(await page.inputValue('#session-model'), 'fake-model-2');
    assert.equal(Number(await page.inputValue('#session-temperature')), 0.3);
    assert.equal(await page.inputValue('#session-max-tokens'), '');
    assert.ok(!(await page.isChecked('#session-cap-well-behaved')));
    await page.click('#session-settings > summary');

    const runsBefore = await page.locator('.run').count();
    await page.fill('#message-input', 'Say hello');
    await page.press('#message-input', 'Enter');
    await until((n) => {
      const runs = document.querySelectorAll('#transcript .run');
      return runs.length > n && runs[runs.length - 1].dataset.status === 'completed';
    }, runsBefore);
    // The new run's configuration, opened from its status line: the session's model, no plugin.
    const last = page.locator('#transcript .run').last();
    await last.locator('.run-details > summary').click();
    const config = last.locator('.run-config');
    await config.locator('dd[data-config=model]').waitFor();
    assert.equal((await config.locator('dd[data-config=model]').textContent()).trim(), 'fake-model-2');
    assert.equal((await config.locator('dd[data-config=temperature]').textContent()).trim(), '0.3');
    assert.equal((await config.locator('dd[data-config=provider]').textContent()).trim(), 'fake');
    assert.ok(!(await config.textContent()).includes('well-behaved'), await config.textContent());
    assert.match(await config.locator('dd[data-config=system_prompt_sha256]').textContent(), /^[0-9a-f]{64}$/);
    // The first run kept what it ran with: the agent's model and the plugin's tools.
    const first = page.locator('#transcript .run').first();
    await first.locator('.run-details > summary').click();
    const firstConfig = first.locator('.run-config');
    await firstConfig.locator('dd[data-config=model]').waitFor();
    assert.equal((await firstConfig.locator('dd[data-config=model]').textContent()).trim(), 'fake-model');
    await firstConfig.locator('[data-capability=well-behaved]').waitFor();
    assert.match(await firstConfig.locator('dd[data-config=tools]').textContent(), /well-behaved__greet/);
    // The same through the API.
    const run = await apiGet(`/v1/runs/${await last.getAttribute('data-run-id')}`);
    assert.equal(run.config.model.model, 'fake-model-2');
    assert.equal(run.config.model.temperature, 0.3);
    assert.equal(run.config.model.provider, 'fake');
    assert.ok(!run.config.capabilities.some((c) => c.id === 'well-behaved'), JSON.stringify(run.config));
    assert.ok(!run.config.tools.some((t) => t.startsWith('well-behaved__')), JSON.stringify(run.config));
    await shot(page, 'chat-session-settings');

    // Clearing the overrides goes back to the agent's settings.
    await page.click('#session-settings > summary');
    await page.click('#clear-session-settings');
    await page.locator('#session-settings-status [data-saved=true]').waitFor();
    assert.equal(compact((await apiGet(`/v1/sessions/${sid}`)).overrides ?? null), null);
    assert.equal(await page.inputValue('#session-model'), '');
    assert.ok(await page.isChecked('#session-cap-well-behaved'));
    assert.equal((await page.textContent('#session-overrides-badge')).trim(), '');
  });

  let approvalUrl;
  await step('tool approval: set in the agent form; two held calls shown as cards, one approved and one rejected; the list marks the waiting session', async () => {
    // The agent, through the form: the plugin, with its echo held for approval.
    await page.goto(BASE + '/#/agents/new');
    await page.fill('#agent-name', 'careful');
    await page.selectOption('#agent-provider', 'fake');
    await page.fill('#agent-model', 'fake-model');
    await page.check('#cap-well-behaved');
    await page.fill('#agent-approval-patterns', '*__echo\nsession_files__delete_*, *__?z');
    await page.fill('#agent-approval-timeout', '600');
    await page.click('#save-agent');
    const agentCard = page.locator('.agent[data-agent-name=careful]');
    await agentCard.waitFor();
    assert.match(await agentCard.locator('dd[data-fact=tool_approval]').textContent(), /\*__echo/);
    const agent = (await apiGet('/v1/agents?limit=200')).data.find((a) => a.name === 'careful');
    assert.deepEqual(agent.tool_approval, { require: ['*__echo', 'session_files__delete_*', '*__?z'], timeout_seconds: 600 });
    // The edit form shows the policy as saved.
    await page.goto(`${BASE}/#/agents/${agent.id}`);
    await page.waitForSelector('#agent-form');
    assert.equal(await page.inputValue('#agent-approval-patterns'), '*__echo\nsession_files__delete_*\n*__?z');
    assert.equal(await page.inputValue('#agent-approval-timeout'), '600');

    // The model asks for two echo calls in one step: both wait, each with its card.
    await page.click('#nav a[data-view=chat]');
    await page.selectOption('#agent-select', { label: 'careful' });
    await page.fill('#message-input', 'Echo two numbers, they need approval');
    await page.press('#message-input', 'Enter');
    await page.waitForURL(/#\/chat\/ses_/);
    approvalUrl = page.url();
    const sid = approvalUrl.split('/').pop();
    await until(() => document.querySelectorAll('.approval[data-state=pending][data-tool-name="well-behaved__echo"]').length === 2);
    await page.waitForSelector('#run-status[data-run-status=waiting_approval]');
    assert.match(await page.textContent('#run-status'), /waiting for approval/i);
    assert.equal(await page.getAttribute('#transcript .run', 'data-status'), 'waiting_approval');
    const byArgs = (n) => page.locator('.approval').filter({ has: page.locator('pre.approval-args', { hasText: `"n": ${n}` }) });
    const firstId = await byArgs(1).getAttribute('data-approval-id');
    const secondId = await byArgs(2).getAttribute('data-approval-id');
    assert.match(firstId, /^apr_/);
    assert.match(secondId, /^apr_/);
    const first = page.locator(`.approval[data-approval-id="${firstId}"]`);
    const second = page.locator(`.approval[data-approval-id="${secondId}"]`);
    assert.match(await first.locator('.tool-name').textContent(), /^well-behaved__echo$/);
    assert.match(await first.locator('.approval-capability').textContent(), /well-behaved/);
    assert.match(await first.locator('.approval-why').textContent(), /\*__echo/);
    assert.deepEqual(JSON.parse(await first.locator('pre.approval-args').textContent()), { n: 1 });
    assert.match(await first.locator('.approval-expiry').textContent(), /Expires/);
    assert.equal(await first.locator('button.approve').textContent(), 'Approve');
    assert.equal(await first.locator('button.reject').textContent(), 'Reject');
    assert.equal(await page.locator('.tool').count(), 0, 'neither call ran yet');
    // The conversation list marks the session while it waits.
    const listed = page.locator(`#session-list li[data-session-id="${sid}"]`);
    await page.locator(`#session-list li[data-session-id="${sid}"][data-waiting-approval=true]`).waitFor();
    assert.ok(await listed.locator('.approval-badge').isVisible(), 'the "approval needed" badge shows');
    assert.match(await listed.locator('.approval-badge').textContent(), /approval needed/);
    assert.equal(await page.locator('#session-list li[data-waiting-approval]').count(), 1, 'only the waiting session is marked');
    await shot(page, 'chat-approval-pending');

    // Rebuilt from the event log (the live stream held back): both still pending, with their
    // buttons. Someone else approves the first meanwhile; this tab's Approve then gets the
    // server's 409, shown in the card.
    await page.route((url) => url.pathname.endsWith('/events'), (route) => (route.request().headers().accept === 'text/event-stream'
      ? route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: '' })
      : route.continue()));
    await page.reload();
    await until(() => document.querySelectorAll('.approval[data-state=pending] button.approve').length === 2);
    const runId = await first.getAttribute('data-run-id');
    const elsewhere = await page.request.post(`${BASE}/v1/runs/${runId}/approvals/${firstId}`, {
      headers: { Authorization: `Bearer ${API_KEY}` }, data: { decision: 'approve' },
    });
    assert.equal(elsewhere.status(), 200, await elsewhere.text());
    await first.locator('button.approve').click();
    await first.locator('.approval-problem .problem').waitFor();
    assert.match(await first.locator('.approval-problem').textContent(), /already decided/);
    assert.equal(await first.getAttribute('data-state'), 'pending', 'the card waits for the event to say what happened');
    // With the stream back, the resolution arrives: the card shows it and its buttons go.
    await page.unrouteAll();
    await page.locator(`.approval[data-approval-id="${firstId}"][data-state=approved]`).waitFor();
    assert.equal(await first.locator('button').count(), 0);
    assert.match(await first.locator('.approval-outcome').textContent(), /Approved/);
    assert.equal(await page.getAttribute('#run-status', 'data-run-status'), 'waiting_approval', 'the other call still waits');

    // Reject the second, with a reason: the button asks for it first (and Back keeps the card).
    await second.locator('button.reject').click();
    await second.locator('.reject-form input.reject-reason').waitFor();
    assert.ok(!(await second.locator('button.approve').isVisible()));
    await second.locator('button.cancel-reject').click();
    assert.ok(await second.locator('button.approve').isVisible());
    assert.ok(!(await second.locator('.reject-form').isVisible()));
    await second.locator('button.reject').click();
    await second.locator('input.reject-reason').fill('not this one');
    await second.locator('button.confirm-reject').click();
    await page.locator(`.approval[data-approval-id="${secondId}"][data-state=rejected]`).waitFor();
    assert.equal(await second.locator('button, input').count(), 0);
    assert.equal(await second.locator('.decision-reason').textContent(), 'not this one');

    // The run goes on: the approved call's result, the rejected call's refusal, the answer.
    await page.waitForSelector('#run-status[data-run-status=completed]');
    const ran = page.locator('.tool[data-state=completed]');
    await ran.waitFor();
    assert.match(await ran.locator('.tool-result').textContent(), /"n":1/);
    const refused = page.locator('.tool[data-state=failed]');
    assert.equal(await refused.count(), 1);
    assert.match(await refused.locator('.tool-state').textContent(), /blocked/);
    assert.match(await refused.locator('.tool-result').textContent(), /approval.*not this one/);
    await page.locator('.msg.assistant:has-text("Echo results:")').waitFor();
    // No longer waiting: the mark goes.
    await page.locator(`#session-list li[data-session-id="${sid}"]:not([data-waiting-approval])`).waitFor();
    assert.ok(!(await listed.locator('.approval-badge').isVisible()));
    await shot(page, 'chat-approval-decided');

    // The server agrees.
    const approvals = await apiGet(`/v1/runs/${runId}/approvals`);
    assert.deepEqual(approvals.data.map((a) => [a.id, a.status, a.decision_reason ?? null]),
      [[firstId, 'approved', null], [secondId, 'rejected', 'not this one']].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
    assert.equal((await apiGet('/v1/approvals?status=pending')).total, 0);

    // Rebuilt from the log after the run: both cards resolved, no buttons, each result once.
    await page.reload();
    await page.waitForSelector('#run-status[data-run-status=completed]');
    await page.locator(`.approval[data-approval-id="${firstId}"][data-state=approved]`).waitFor();
    await page.locator(`.approval[data-approval-id="${secondId}"][data-state=rejected]`).waitFor();
    assert.equal(await page.locator('.approval button').count(), 0);
    assert.equal(await page.locator(`.approval[data-approval-id="${secondId}"] .decision-reason`).textContent(), 'not this one');
    assert.equal(await page.locator('.approval').count(), 2);
    assert.equal(await page.locator('.tool').count(), 2);
    assert.equal(await page.locator('#session-list li[data-waiting-approval]').count(), 0);

    // Emptying the patterns removes the policy.
    await page.goto(`${BASE}/#/agents/${agent.id}`);
    await page.waitForSelector('#agent-form');
    await page.fill('#agent-approval-patterns', '');
    await page.click('#save-agent');
    await page.locator('.agent[data-agent-name=careful]').waitFor();
    assert.equal((await apiGet(`/v1/agents/${agent.id}`)).tool_approval ?? null, null);
    assert.equal((await page.locator('.agent[data-agent-name=careful] dd[data-fact=tool_approval]').textContent()).trim(), 'none');
  });

  await step('capabilities: the plugin, its tools, schemas and permissions', async () => {
    await page.click('#nav a[data-view=capabilities]');
    const card = page.locator('.capability[data-capability=well-behaved]');
    await card.waitFor();
    assert.equal(await card.getAttribute('data-status'), 'loaded');
    for (const tool of ['greet', 'count', 'ping', 'echo']) assert.equal(await card.locator(`.tool-spec[data-tool=${tool}]`).count(), 1, tool);
    assert.match(await card.textContent(), /per agent|per session/);
    const broken = page.locator('.capability[data-capability=broken]');
    assert.equal(await broken.getAttribute('data-status'), 'failed');
    assert.match(await broken.locator('.problem').textContent(), /bogus_field/);
  });

  await step('API keys: a new key is shown once and can be revoked', async () => {
    await page.click('#nav a[data-view=settings]');
    await page.fill('#api-key-name', 'e2e-key');
    await page.click('#api-key-form button[type=submit]');
    const shown = await page.locator('#new-api-key').textContent();
    assert.match(shown, /^evr_[0-9a-f]{64}$/);
    const row = page.locator('#api-key-list li:has-text("e2e-key")');
    await row.locator('button:has-text("Revoke")').click();
    await row.locator('.badge:has-text("revoked")').waitFor();
    await page.reload();
    await page.locator('#api-key-list li:has-text("e2e-key")').waitFor();
    assert.equal(await page.locator('#new-api-key').count(), 0, 'the key is not shown again');
  });

  await step('a reader key sees conversations but not the controls it may not use, and is told why', async () => {
    await page.fill('#api-key-name', 'e2e-reader');
    await page.selectOption('#api-key-role', 'reader');
    await page.click('#api-key-form button[type=submit]');
    const readerKey = await page.locator('#new-api-key').textContent();
    await page.locator('#api-key-list li:has-text("e2e-reader") .badge:has-text("reader")').waitFor();
    const ctx = await browser.newContext();
    const reader = await ctx.newPage();
    reader.setDefaultTimeout(TIMEOUT);
    watch(reader, { errors: log.errors, streams: [], bodies: [], pending: [] });
    await reader.goto(BASE + '/');
    await reader.fill('#api-key', readerKey);
    await reader.click('#signin-form button[type=submit]');
    await reader.waitForSelector('#nav:not([hidden])');
    await reader.locator('#whoami', { hasText: 'e2e-reader · reader' }).waitFor();
    await reader.goto(sessionUrl);
    await reader.waitForSelector('#transcript .run');
    assert.ok(await reader.locator('#reader-note').isVisible(), 'the reader is told why it cannot send');
    assert.ok(!(await reader.locator('#composer').isVisible()), 'no composer for a reader');
    assert.ok(!(await reader.locator('#new-chat').isVisible()));
    await reader.goto(`${BASE}/#/agents`);
    await reader.waitForSelector('.agent');
    assert.ok(!(await reader.locator('#new-agent').isVisible()), 'no "New agent" for a reader');
    await reader.goto(`${BASE}/#/settings`);
    assert.match(await reader.locator('#settings-denied').textContent(), /admin key.*e2e-reader.*a reader/);
    await ctx.close();
  });

  await step('secrets: set and delete; the value is never shown', async () => {
    await page.fill('#secret-name', 'e2e_secret');
    await page.fill('#secret-value', SECRET_VALUE);
    await page.click('#secret-form button[type=submit]');
    await page.locator('#secret-list li[data-secret=e2e_secret]').waitFor();
    assert.equal(await page.inputValue('#secret-value'), '');
    assert.ok(!(await page.content()).includes(SECRET_VALUE));
    await page.locator('#secret-list li[data-secret=e2e_secret] button').click();
    await page.locator('#secret-list li[data-secret=e2e_secret]').waitFor({ state: 'detached' });
  });

  await step('the provider key is in no page, DOM, storage or response seen by the page', async () => {
    await page.goto(sessionUrl);
    await page.waitForSelector('.tool');
    await Promise.all(log.pending);
    const views = [['#/chat', '#message-input'], ['#/agents', '.agent'], ['#/capabilities', '.capability'], ['#/settings', '.provider']];
    for (const [view, ready] of views) {
      await page.goto(BASE + '/' + view);
      await page.waitForSelector(ready);
      const seen = await page.evaluate(() => ({
        html: document.documentElement.outerHTML,
        inputs: [...document.querySelectorAll('input, textarea')].map((i) => i.value).join('\n'),
        local: JSON.stringify({ ...localStorage }),
        session: JSON.stringify({ ...sessionStorage }),
      }));
      for (const [where, text] of Object.entries(seen)) {
        assert.ok(!text.includes(LLM_KEY), `the provider key is in ${where} of ${view}`);
        assert.ok(!text.includes(SECRET_VALUE), `the secret value is in ${where} of ${view}`);
      }
    }
    await Promise.all(log.pending);
    assert.ok(log.bodies.length > 20, `only ${log.bodies.length} responses seen`);
    for (const { url, body } of log.bodies) {
      assert.ok(!body.includes(LLM_KEY), `the provider key is in the response of ${url}`);
      assert.ok(!body.includes(SECRET_VALUE), `the secret value is in the response of ${url}`);
    }
    // The SSE streams carried the session's events; the same events as JSON hold no key either.
    const sid = sessionUrl.split('/').pop();
    const events = await page.request.get(`${BASE}/v1/sessions/${sid}/events?limit=500`, { headers: { Authorization: `Bearer ${API_KEY}` } });
    assert.ok(!(await events.text()).includes(LLM_KEY));
  });

  await step('a 360 px wide screen has no horizontal overflow', async () => {
    const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
    const small = await phone.newPage();
    small.setDefaultTimeout(TIMEOUT);
    const phoneLog = { errors: log.errors, streams: [], bodies: [], pending: [] };
    watch(small, phoneLog);
    await signIn(small);
    const sid = sessionUrl.split('/').pop();
    const agentId = await small.evaluate(async (key) => {
      const r = await fetch('/v1/agents', { headers: { Authorization: `Bearer ${key}` } });
      return (await r.json()).data[0].id;
    }, API_KEY);
    for (const [view, ready] of [
      [`#/chat/${sid}`, '.tool[data-state=completed]'],
      [`#/chat/${approvalUrl.split('/').pop()}`, '.approval[data-state=rejected]'],
      ['#/chat', '#message-input'],
      ['#/agents', '.agent'],
      [`#/agents/${agentId}`, '#agent-form'],
      ['#/capabilities', '.capability'],
      ['#/settings', '.provider'],
    ]) {
      await small.goto(`${BASE}/${view}`);
      await small.waitForSelector(ready);
      if (view === `#/chat/${sid}`) {
        // With the session's settings and a run's configuration open.
        await small.click('#session-settings > summary');
        await small.waitForSelector('#session-settings-form');
        await small.locator('#transcript .run .run-details > summary').first().click();
        await small.locator('#transcript .run .run-config dd[data-config=tools]').first().waitFor();
      }
      const { scroll, width } = await small.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
      assert.ok(scroll <= width, `${view} overflows horizontally at 360 px: ${scroll} > ${width}`);
      await shot(small, `phone-${view.replace(/[#/]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'home'}`);
    }
    await phone.close();
  });

  await step('no console errors, page errors or CSP violations', async () => {
    assert.deepEqual(log.errors, []);
  });
} finally {
  await browser.close();
}
console.log(`${passed} passed, 0 failed`);
