// Renders model output as a safe subset of Markdown, building DOM nodes only (no HTML parsing):
// paragraphs, headings, lists, block quotes, fenced code, rules, and inline code, bold, italic,
// strikethrough and links. Links must be http(s) and open with rel="noopener noreferrer";
// anything else stays plain text. Raw HTML in the text is shown as text.

import { h } from './dom.js';

/** A DocumentFragment for `text`. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(String(text || '').replace(/\r\n?/g, '\n').split('\n'), fragment);
  return fragment;
}

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+#.-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;

function blocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(m[1])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a still-streaming block)
      const code = h('code', { text: body.join('\n') });
      if (m[2]) code.dataset.lang = m[2];
      parent.append(h('pre', { class: 'code' }, code));
    } else if ((m = HEADING.exec(line))) {
      const level = Math.min(6, m[1].length + 2);
      parent.append(inline(m[2], h(`h${level}`)));
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(h('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        quoted.push(m[1]);
        i += 1;
      }
      const bq = h('blockquote');
      blocks(quoted, bq);
      parent.append(bq);
    } else if (BULLET.test(line) || ORDERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? ORDERED : BULLET;
      const list = h(ordered ? 'ol' : 'ul');
      if (ordered) {
        const start = Number(ORDERED.exec(line)[1]);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length && (m = pattern.exec(lines[i]))) {
        const item = [ordered ? m[2] : m[1]];
        i += 1;
        // Indented continuation lines belong to the item.
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !pattern.test(lines[i])) item.push(lines[i++].trim());
        list.append(inline(item.join('\n'), h('li')));
      }
      parent.append(list);
    } else {
      const para = [];
      while (
        i < lines.length && lines[i].trim() &&
        !FENCE.test(lines[i]) && !HEADING.test(lines[i]) && !QUOTE.test(lines[i]) &&
        !BULLET.test(lines[i]) && !ORDERED.test(lines[i]) && !RULE.test(lines[i])
      ) para.push(lines[i++]);
      parent.append(inline(para.join('\n'), h('p')));
    }
  }
}

// Inline spans, earliest match first. Group layout per pattern is handled in `span`.
const INLINE = [
  { kind: 'code', re: /`([^`\n]+)`/ },
  { kind: 'link', re: /\[([^\]\n]+)\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)/ },
  { kind: 'auto', re: /\bhttps?:\/\/[^\s<>()]+[^\s<>().,;:!?'"\]]/ },
  { kind: 'strong', re: /\*\*([^*\n](?:[^\n]*?[^*\n])?)\*\*|__([^_\n](?:[^\n]*?[^_\n])?)__/ },
  { kind: 'del', re: /~~([^~\n]+)~~/ },
  { kind: 'em', re: /\*([^*\s](?:[^*\n]*?[^*\s])?)\*|(?<![\w])_([^_\s](?:[^_\n]*?[^_\s])?)_(?![\w])/ },
];

/** Appends the inline rendering of `text` to `el` and returns `el`. */
function inline(text, el) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const pattern of INLINE) {
      const m = pattern.re.exec(rest);
      if (m && (!best || m.index < best.m.index)) best = { kind: pattern.kind, m };
    }
    if (!best) {
      lineBreaks(rest, el);
      break;
    }
    lineBreaks(rest.slice(0, best.m.index), el);
    el.append(span(best.kind, best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
  return el;
}

function lineBreaks(text, el) {
  text.split('\n').forEach((part, n) => {
    if (n > 0) el.append(h('br'));
    if (part) el.append(document.createTextNode(part));
  });
}

function span(kind, m) {
  switch (kind) {
    case 'code':
      return h('code', { text: m[1] });
    case 'link': {
      const href = safeHref(m[2]);
      return href ? link(href, inline(m[1], document.createDocumentFragment())) : document.createTextNode(m[0]);
    }
    case 'auto': {
      const href = safeHref(m[0]);
      return href ? link(href, m[0]) : document.createTextNode(m[0]);
    }
    case 'strong':
      return inline(m[1] ?? m[2], h('strong'));
    case 'del':
      return inline(m[1], h('del'));
    default:
      return inline(m[1] ?? m[2], h('em'));
  }
}

function link(href, content) {
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, content);
}

/** The URL if it is absolute http(s), else null (javascript:, data:, relative, ...). */
export function safeHref(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}
