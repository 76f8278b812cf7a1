"""The `{{id}}` capability. Build with ./build.sh; see README.md."""

import everruns_sdk as everruns

plugin = everruns.Plugin("{{id}}", "0.1.0", "Greets people and remembers how often")


@plugin.prompt
def prompt(ctx):
    return "When someone introduces themselves, greet them with the `greet` tool."


@plugin.tool(
    description="Greet someone by name; says how many times they were greeted before.",
    parameters={
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100, "description": "Who to greet"},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
)
def greet(ctx, name):
    times = everruns.kv.get("greeted:" + name, 0) + 1
    everruns.kv.set("greeted:" + name, times)
    everruns.log.info(f"greeting {name} (time {times})")
    return f"Hello, {name}! (greeting number {times})"


# Hooks see every model call and every tool call of the agent, and may change them. To use
# one, uncomment it and list it in capability.toml (`hooks = ["before-tool"]`).
#
# @plugin.before_tool
# def polite(ctx, call):
#     if call.name == "{{id}}__greet" and call.arguments.get("name", "").lower() == "mallory":
#         return everruns.Block("we do not greet Mallory")
#     return everruns.Continue()


Capability = plugin.export()
