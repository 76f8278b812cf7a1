// Example capability in JavaScript: `tally`, named counters on durable key-value state.
//
// Tools: `add(counter, amount?)`, `get(counter)`, `reset(counter)`, `list()`. The prompt
// fragment tells the model what the counters are for; the unit comes from the config.
// Hooks: `beforeModel` stops a run that has asked the model more than `max_steps` times
// (config), `beforeTool` lowercases counter names and wants a person's approval for large
// amounts, `afterTool` adds the unit to the counts `get` returns.

import { definePlugin, kv, log, NotFound } from "../../../sdk/js/everruns.js";

const COUNTER = {
  type: "string",
  pattern: "^[a-z0-9_-]{1,40}$",
  description: "The counter's name: lowercase letters, digits, - and _",
};

export const capability = definePlugin({
  id: "tally",
  version: "0.1.0",
  description: "Named counters that persist across the agent's sessions",

  prompt: (ctx) =>
    `You can keep named counts of ${ctx.config.unit ?? "things"} with the tally tools: ` +
    "`add` to count, `get` to read a count, `list` to see all counters, `reset` to start over.",

  tools: {
    add: {
      description: "Add an amount (default 1) to a counter and return its new value.",
      parameters: {
        type: "object",
        properties: {
          counter: COUNTER,
          amount: { type: "integer", minimum: -1000000, maximum: 1000000 },
        },
        required: ["counter"],
        additionalProperties: false,
      },
      run({ counter, amount = 1 }) {
        const value = kv.get(`counter:${counter}`, 0) + amount;
        kv.set(`counter:${counter}`, value);
        log.info(`${counter} is now ${value}`);
        return { counter, value };
      },
    },

    get: {
      description: "Read a counter's value.",
      parameters: {
        type: "object",
        properties: { counter: COUNTER },
        required: ["counter"],
        additionalProperties: false,
      },
      run({ counter }) {
        const value = kv.get(`counter:${counter}`);
        if (value === undefined) throw new NotFound(`no counter named \`${counter}\``);
        return { counter, value };
      },
    },

    reset: {
      description: "Remove a counter.",
      parameters: {
        type: "object",
        properties: { counter: COUNTER },
        required: ["counter"],
        additionalProperties: false,
      },
      run({ counter }) {
        return kv.delete(`counter:${counter}`) ? `reset ${counter}` : `${counter} was not set`;
      },
    },

    list: {
      description: "List all counters and their values.",
      run() {
        const counters = {};
        for (const key of kv.keys("counter:")) {
          counters[key.slice("counter:".length)] = kv.get(key);
        }
        return counters;
      },
    },
  },

  hooks: {
    // A step budget: the run fails once it has asked the model `max_steps` times.
    beforeModel(request, ctx) {
      const budget = ctx.config.max_steps ?? 20;
      if (request.step >= budget) return { block: `step budget of ${budget} model calls used up` };
    },

    beforeTool(call) {
      if (!call.name.startsWith("tally__")) return;
      const { counter, amount } = call.arguments;
      if (amount !== undefined && Math.abs(amount) > 1000) {
        return { requireApproval: `changing \`${counter}\` by ${amount}` };
      }
      // Counter names are lowercase; the model does not always remember.
      if (counter !== undefined && counter !== counter.toLowerCase()) {
        return { rewrite: { ...call.arguments, counter: counter.toLowerCase() } };
      }
    },

    afterTool(call, result, ctx) {
      if (call.name === "tally__get" && result.json) {
        return { json: { ...result.json, unit: ctx.config.unit ?? "things" } };
      }
    },
  },
});

export const hooks = capability.hooks;
