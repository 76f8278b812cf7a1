// Everruns capability SDK for JavaScript: a thin layer over the component bindings that
// componentize-qjs generates from `everruns:capability@0.2.0` (wit/0.2.0, world `plugin`).
//
// A plugin declares its capability, its tools (each a JSON Schema and a handler), an
// optional prompt fragment and optional hooks, and exports the result as `capability`
// (and its `hooks` as `hooks`):
//
//   import { definePlugin } from "./everruns.js";
//
//   export const capability = definePlugin({
//     id: "greeter",
//     version: "0.1.0",
//     description: "Greets people",
//     tools: {
//       greet: {
//         description: "Greet someone by name.",
//         parameters: {
//           type: "object",
//           properties: { name: { type: "string", minLength: 1 } },
//           required: ["name"],
//         },
//         run: ({ name }) => `Hello, ${name}!`,
//       },
//     },
//     hooks: {
//       beforeTool(call) {
//         if (call.arguments.name === "Mallory") return { block: "we do not greet Mallory" };
//       },
//     },
//   });
//   export const hooks = capability.hooks;
//
// A hook the plugin does not define answers "continue" / "keep".
//
// The SDK checks arguments against the tool's schema before the handler runs, and turns
// a bad argument or an exception into a tool error for the model (never a trap). A
// handler returning a string gives a text result; any other JSON value a JSON result.
//
// An exception thrown in a hook fails closed: `beforeModel` and `beforeTool` answer
// `block` with the exception, `afterTool` replaces the result with an error naming it; the
// stack goes to the log.
//
// Host services: `kv` (durable key-value state holding JSON values), `secrets`, `log`.

import * as hostKv from "everruns:capability/kv@0.2.0";
import * as hostLog from "everruns:capability/log@0.2.0";
import * as hostSecrets from "everruns:capability/secrets@0.2.0";

// --- Errors a handler may throw --------------------------------------------------------

/** An error for the model. Throw a subclass to choose the kind (default: `failed`). */
export class ToolError extends Error {
  get kind() {
    return "failed";
  }
}

/** The arguments did not make sense (the schema check already ran). */
export class InvalidArguments extends ToolError {
  get kind() {
    return "invalid-arguments";
  }
}

/** The thing the tool was asked about does not exist. */
export class NotFound extends ToolError {
  get kind() {
    return "not-found";
  }
}

/** The tool tried and failed. */
export class Failed extends ToolError {}

/** The plugin refuses (for example, it lacks a permission or a secret). */
export class Denied extends ToolError {
  get kind() {
    return "denied";
  }
}

/** A key-value operation failed. Unhandled in a tool, it becomes a `failed` error. */
export class KvError extends Failed {}

/** A secret is not granted or has no value. Unhandled, it becomes a `denied` error. */
export class SecretError extends Denied {}

// --- Host services ---------------------------------------------------------------------

// The bindings throw the WIT error variant ({ tag, val }), possibly wrapped in an Error
// whose `payload` holds it.
function variantOf(e) {
  if (e && typeof e === "object" && "tag" in e) return e;
  if (e && typeof e === "object" && e.payload && "tag" in e.payload) return e.payload;
  return { tag: "backend", val: String(e) };
}

function kvError(e) {
  const v = variantOf(e);
  if (v.tag === "not-granted") {
    return new KvError("key-value state is not granted (set `kv = true` in capability.toml)");
  }
  if (v.tag === "too-large") return new KvError(`key-value limit exceeded: ${v.val}`);
  return new KvError(`key-value backend failed: ${v.val}`);
}

function hostCall(fn, mapError) {
  try {
    return fn();
  } catch (e) {
    throw mapError(e);
  }
}

// QuickJS has no TextEncoder/TextDecoder: UTF-8 by hand (values are JSON text).
function utf8Encode(text) {
  const bytes = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else {
      bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    }
  }
  return new Uint8Array(bytes);
}

function utf8Decode(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const extra = b < 0x80 ? 0 : b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : 1;
    let c = extra === 0 ? b : b & (0x3f >> extra);
    for (let k = 1; k <= extra; k++) c = (c << 6) | (bytes[i + k] & 0x3f);
    text += String.fromCodePoint(c);
    i += extra + 1;
  }
  return text;
}

/** Durable key-value state holding JSON values, scoped by the host to this plugin and to
 * the agent or session (`kv_scope` in capability.toml). */
export const kv = {
  /** The value stored under `key`, or `fallback` when it is not set. */
  get(key, fallback = undefined) {
    const raw = hostCall(() => hostKv.get(key), kvError);
    if (raw === null || raw === undefined) return fallback;
    return JSON.parse(utf8Decode(raw));
  },
  /** Stores `value` (anything `JSON.stringify` accepts) under `key`. */
  set(key, value) {
    const json = JSON.stringify(value);
    if (json === undefined) throw new KvError(`value for \`${key}\` is not JSON`);
    hostCall(() => hostKv.set(key, utf8Encode(json)), kvError);
  },
  /** Removes `key`; returns whether it existed. */
  delete(key) {
    return hostCall(() => hostKv.delete(key), kvError);
  },
  /** The keys starting with `prefix`, sorted (at most 1000). */
  keys(prefix = "") {
    return hostCall(() => hostKv.listKeys(prefix), kvError);
  },
};

/** Named secrets the operator granted to this plugin. */
export const secrets = {
  /** The secret's value; throws `SecretError` if not granted or not set. */
  get(name) {
    return hostCall(
      () => hostSecrets.get(name),
      (e) =>
        new SecretError(
          variantOf(e).tag === "not-granted"
            ? `secret \`${name}\` is not granted`
            : `secret \`${name}\` has no value`,
        ),
    );
  },
};

/** Log lines recorded with the tool step in the run's trace. */
export const log = {
  trace: (message) => hostLog.log("trace", String(message)),
  debug: (message) => hostLog.log("debug", String(message)),
  info: (message) => hostLog.log("info", String(message)),
  warn: (message) => hostLog.log("warn", String(message)),
  error: (message) => hostLog.log("error", String(message)),
};

// --- Call context ----------------------------------------------------------------------

/** Who is calling: `agentId`, `sessionId`, `runId`, `idempotencyKey` (stable across
 * retries of one tool step; `null` outside tool calls) and `config` (the plugin's
 * configuration for this agent, an object). */
function context(ctx) {
  let config = {};
  try {
    config = ctx.config ? JSON.parse(ctx.config) : {};
  } catch {
    config = {};
  }
  return {
    agentId: ctx.agentId,
    sessionId: ctx.sessionId,
    runId: ctx.runId,
    idempotencyKey: ctx.idempotencyKey ?? null,
    config,
  };
}

// --- Argument checking -----------------------------------------------------------------

function jsonType(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value; // string, boolean, object
}

function isType(value, name) {
  const actual = jsonType(value);
  return actual === name || (name === "number" && actual === "integer");
}

const where = (path) => (path ? `\`${path}\`` : "the arguments");
const join = (path, name) => (path ? `${path}.${name}` : name);

function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// The first way `value` violates `schema`, as a message naming the field, or null.
// Supports the keywords tool schemas use: type, enum, const, properties, required,
// additionalProperties, items, min/maxItems, min/maxLength, pattern, minimum, maximum,
// exclusiveMinimum, exclusiveMaximum. Other keywords are not enforced.
function check(schema, value, path) {
  if (!schema || typeof schema !== "object") return null;
  if (schema.type !== undefined) {
    const names = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!names.some((n) => isType(value, n))) {
      return `${where(path)}: expected ${names.join(" or ")}, got ${jsonType(value)}`;
    }
  }
  if (schema.enum && !schema.enum.some((v) => sameJson(v, value))) {
    return `${where(path)}: must be one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  if ("const" in schema && !sameJson(schema.const, value)) {
    return `${where(path)}: must be ${JSON.stringify(schema.const)}`;
  }
  const type = jsonType(value);
  if (type === "object") {
    const props = schema.properties || {};
    for (const name of schema.required || []) {
      if (!(name in value)) return `${where(join(path, name))}: required`;
    }
    const extra = schema.additionalProperties === undefined ? true : schema.additionalProperties;
    for (const [name, item] of Object.entries(value)) {
      const sub = join(path, name);
      let problem;
      if (Object.hasOwn(props, name)) problem = check(props[name], item, sub);
      else if (extra === false) problem = `${where(sub)}: unknown field`;
      else problem = check(extra, item, sub);
      if (problem) return problem;
    }
  }
  if (type === "array") {
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      return `${where(path)}: needs at least ${schema.minItems} items`;
    }
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      return `${where(path)}: allows at most ${schema.maxItems} items`;
    }
    for (let i = 0; i < value.length; i++) {
      const problem = check(schema.items, value[i], `${path}[${i}]`);
      if (problem) return problem;
    }
  }
  if (type === "string") {
    const length = [...value].length; // code points, as JSON Schema counts
    if (schema.minLength !== undefined && length < schema.minLength) {
      return `${where(path)}: must be at least ${schema.minLength} characters`;
    }
    if (schema.maxLength !== undefined && length > schema.maxLength) {
      return `${where(path)}: must be at most ${schema.maxLength} characters`;
    }
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) {
      return `${where(path)}: must match ${schema.pattern}`;
    }
  }
  if (type === "number" || type === "integer") {
    if (schema.minimum !== undefined && value < schema.minimum) {
      return `${where(path)}: must be >= ${schema.minimum}`;
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      return `${where(path)}: must be <= ${schema.maximum}`;
    }
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
      return `${where(path)}: must be > ${schema.exclusiveMinimum}`;
    }
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) {
      return `${where(path)}: must be < ${schema.exclusiveMaximum}`;
    }
  }
  return null;
}

// --- Hooks -----------------------------------------------------------------------------

// The one-line text of an exception thrown in a hook; the stack goes to the log.
function hookFailed(hook, e) {
  log.error(`hook \`${hook}\` threw: ${e && e.stack ? e.stack : e}`);
  const name = e && e.name ? e.name : "Error";
  return `hook \`${hook}\` failed: ${name}: ${e && e.message !== undefined ? e.message : e}`;
}

function only(decision, keys, hook) {
  const found = Object.keys(decision);
  if (found.length !== 1 || !keys.includes(found[0])) {
    throw new TypeError(
      `${hook} returned ${JSON.stringify(decision)}; expected undefined or one of ` +
        keys.map((k) => `{ ${k}: ... }`).join(", "),
    );
  }
  return found[0];
}

function isPromise(value) {
  return value && typeof value.then === "function";
}

const notSync = (hook) => new TypeError(`${hook} returned a Promise; hooks are synchronous`);

/** A tool call as hooks see it: `name` (namespaced, `<capability>__<tool>`), `arguments`
 * (parsed JSON, normally an object), `toolCallId`, `step`. */
function toolRequest(call) {
  let args;
  try {
    args = call.arguments.trim() ? JSON.parse(call.arguments) : {};
  } catch {
    args = call.arguments;
  }
  return { name: call.name, arguments: args, toolCallId: call.toolCallId, step: call.step };
}

// WIT `tool-result` ({ tag: "ok"|"err", val }) to `{ text }`, `{ json }` or `{ error }`.
function resultFromWit(result) {
  if (result.tag === "err") return { error: result.val };
  const output = result.val;
  if (output.tag === "json") {
    try {
      return { json: JSON.parse(output.val) };
    } catch {
      return { text: output.val };
    }
  }
  return { text: output.val };
}

// `afterTool`'s answer to WIT `option<tool-result>`.
function resultToWit(result) {
  if (result === undefined || result === null) return null;
  if (typeof result === "string") return { tag: "ok", val: { tag: "text", val: result } };
  if (typeof result !== "object" || Array.isArray(result)) {
    throw new TypeError(
      `afterTool returned ${JSON.stringify(result)}; expected undefined, a string, ` +
        "{ text }, { json } or { error }",
    );
  }
  const key = only(result, ["text", "json", "error"], "afterTool");
  if (key === "error") return { tag: "err", val: String(result.error) };
  if (key === "text") return { tag: "ok", val: { tag: "text", val: String(result.text) } };
  const json = JSON.stringify(result.json);
  if (json === undefined) throw new TypeError("afterTool: the `json` replacement is not JSON");
  return { tag: "ok", val: { tag: "json", val: json } };
}

// The `hooks` export. Hooks the definition leaves out answer continue / keep.
function hooksExport(hooks) {
  const { beforeModel, beforeTool, afterTool } = hooks;
  for (const [name, fn] of Object.entries(hooks)) {
    if (!["beforeModel", "beforeTool", "afterTool"].includes(name)) {
      throw new Error(`unknown hook \`${name}\` (expected beforeModel, beforeTool, afterTool)`);
    }
    if (typeof fn !== "function") throw new Error(`hook \`${name}\` is not a function`);
  }
  return {
    beforeModel(ctx, request) {
      if (!beforeModel) return { tag: "continue" };
      try {
        const { lastUserMessage, tools, step } = request;
        const decision = beforeModel({ lastUserMessage, tools: [...tools], step }, context(ctx));
        if (decision === undefined || decision === null) return { tag: "continue" };
        if (isPromise(decision)) throw notSync("beforeModel");
        const key = only(decision, ["continue", "addContext", "block"], "beforeModel");
        if (key === "continue") return { tag: "continue" };
        if (key === "addContext") return { tag: "add-context", val: String(decision.addContext) };
        return { tag: "block", val: String(decision.block) };
      } catch (e) {
        return { tag: "block", val: hookFailed("before-model", e) };
      }
    },

    beforeTool(ctx, call) {
      if (!beforeTool) return { tag: "continue" };
      try {
        const decision = beforeTool(toolRequest(call), context(ctx));
        if (decision === undefined || decision === null) return { tag: "continue" };
        if (isPromise(decision)) throw notSync("beforeTool");
        const keys = ["continue", "rewrite", "block", "requireApproval"];
        const key = only(decision, keys, "beforeTool");
        if (key === "continue") return { tag: "continue" };
        if (key === "rewrite") {
          const type = jsonType(decision.rewrite);
          if (type !== "object") {
            throw new TypeError(`rewrite needs an object of arguments, got ${type}`);
          }
          return { tag: "rewrite", val: JSON.stringify(decision.rewrite) };
        }
        if (key === "block") return { tag: "block", val: String(decision.block) };
        return { tag: "require-approval", val: String(decision.requireApproval) };
      } catch (e) {
        return { tag: "block", val: hookFailed("before-tool", e) };
      }
    },

    afterTool(ctx, call, result) {
      if (!afterTool) return null;
      try {
        const replacement = afterTool(toolRequest(call), resultFromWit(result), context(ctx));
        if (isPromise(replacement)) throw notSync("afterTool");
        return resultToWit(replacement);
      } catch (e) {
        return { tag: "err", val: hookFailed("after-tool", e) };
      }
    },
  };
}

// --- The plugin ------------------------------------------------------------------------

const NO_ARGUMENTS = { type: "object", properties: {}, additionalProperties: false };

const toolError = (kind, message) => ({ tag: kind, val: String(message) });

/**
 * Builds the `capability` export from a plugin definition:
 * - `id`, `version`, `description`: must match capability.toml;
 * - `tools`: an object mapping each tool name to `{ description, parameters, run }`,
 *   where `parameters` is a JSON Schema for an object (default: no arguments) and
 *   `run(args, ctx)` returns the result;
 * - `prompt(ctx)` (optional): the system-prompt fragment, a string or null;
 * - `hooks` (optional): `{ beforeModel(request, ctx), beforeTool(call, ctx),
 *   afterTool(call, result, ctx) }`, any of them. The returned object carries the `hooks`
 *   export as its `hooks` property: `export const hooks = capability.hooks;`.
 */
export function definePlugin(definition) {
  const { id, version, description = "", prompt, tools = {}, hooks = {} } = definition;
  const specs = Object.entries(tools).map(([name, tool]) => {
    const parameters = tool.parameters ?? NO_ARGUMENTS;
    if (parameters.type !== "object") {
      throw new Error(`tool \`${name}\`: parameters must be an object schema`);
    }
    if (typeof tool.run !== "function") throw new Error(`tool \`${name}\`: run is not a function`);
    return { name, description: tool.description ?? "", parameters, run: tool.run };
  });
  const byName = new Map(specs.map((t) => [t.name, t]));

  return {
    hooks: hooksExport(hooks),

    info() {
      return { id, version, description };
    },

    systemPrompt(ctx) {
      if (!prompt) return null;
      const text = prompt(context(ctx));
      return text === null || text === undefined ? null : String(text);
    },

    tools() {
      return specs.map((t) => ({
        name: t.name,
        description: t.description,
        parametersSchema: JSON.stringify(t.parameters),
      }));
    },

    callTool(ctx, call) {
      const tool = byName.get(call.name);
      if (!tool) throw toolError("not-found", `no tool named \`${call.name}\``);
      let args;
      try {
        args = call.arguments.trim() ? JSON.parse(call.arguments) : {};
      } catch (e) {
        throw toolError("invalid-arguments", `arguments are not JSON: ${e.message}`);
      }
      const problem = check(tool.parameters, args, "");
      if (problem) throw toolError("invalid-arguments", problem);
      let result;
      try {
        result = tool.run(args, context(ctx));
      } catch (e) {
        if (e instanceof ToolError) throw toolError(e.kind, e.message);
        log.error(`tool \`${call.name}\` threw: ${e && e.stack ? e.stack : e}`);
        const name = e && e.name ? e.name : "Error";
        throw toolError("failed", `${name}: ${e && e.message !== undefined ? e.message : e}`);
      }
      if (typeof result === "string") return { tag: "text", val: result };
      if (result && typeof result.then === "function") {
        throw toolError("failed", `tool \`${call.name}\` returned a Promise; handlers are synchronous`);
      }
      try {
        return { tag: "json", val: JSON.stringify(result === undefined ? null : result) };
      } catch (e) {
        throw toolError("failed", `tool returned a value that is not JSON: ${e.message}`);
      }
    },
  };
}
