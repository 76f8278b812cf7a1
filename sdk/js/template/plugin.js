// The `{{id}}` capability. Build with `sh build.sh`; see README.md.

import { definePlugin, kv, log } from "./everruns.js";

export const capability = definePlugin({
  id: "{{id}}",
  version: "0.1.0",
  description: "Greets people and remembers how often",

  prompt: () => "When someone introduces themselves, greet them with the `greet` tool.",

  tools: {
    greet: {
      description: "Greet someone by name; says how many times they were greeted before.",
      parameters: {
        type: "object",
        properties: {
          name: { type: "string", minLength: 1, maxLength: 100, description: "Who to greet" },
        },
        required: ["name"],
        additionalProperties: false,
      },
      run({ name }) {
        const times = kv.get(`greeted:${name}`, 0) + 1;
        kv.set(`greeted:${name}`, times);
        log.info(`greeting ${name} (time ${times})`);
        return `Hello, ${name}! (greeting number ${times})`;
      },
    },
  },

  // Hooks see every model call and every tool call of the agent, and may change them. To
  // use one, uncomment it and list it in capability.toml (`hooks = ["before-tool"]`).
  //
  // hooks: {
  //   beforeTool(call) {
  //     if (call.name === "{{id}}__greet" && call.arguments.name?.toLowerCase() === "mallory") {
  //       return { block: "we do not greet Mallory" };
  //     }
  //   },
  // },
});

// The `hooks` export: hooks the plugin does not define answer "continue" / "keep".
export const hooks = capability.hooks;
