"""Example capability in Python: `notes`, a per-session notebook on durable key-value state.

Tools: `add_note(title, text)`, `read_note(title)`, `list_notes()`, `delete_note(title)`.
The prompt fragment tells the model when to use them; its wording comes from the config.
Hooks: `before_model` reminds the model which notes exist, `before_tool` refuses to save
a note that mentions a password, `after_tool` redacts long numbers from the notes it reads.
"""

import re

import everruns_sdk as everruns

plugin = everruns.Plugin("notes", "0.1.0", "A notebook for the session: add, read, list and delete notes")

TITLE = {"type": "string", "minLength": 1, "maxLength": 100, "description": "The note's title"}


@plugin.prompt
def prompt(ctx):
    style = ctx.config.get("style", "short")
    return (
        "You have a notebook for this conversation. Save facts worth keeping with "
        f"`add_note` and look them up with `list_notes` and `read_note`. Keep notes {style}."
    )


@plugin.tool(
    description="Save a note under a title, replacing any note with the same title.",
    parameters={
        "type": "object",
        "properties": {
            "title": TITLE,
            "text": {"type": "string", "maxLength": 4000, "description": "The note's text"},
        },
        "required": ["title", "text"],
        "additionalProperties": False,
    },
)
def add_note(ctx, title, text):
    replaced = everruns.kv.get("note:" + title) is not None
    everruns.kv.set("note:" + title, {"text": text, "run": ctx.run_id})
    everruns.log.info(f"saved note {title!r}")
    return {"saved": title, "replaced": replaced, "notes": len(everruns.kv.keys("note:"))}


@plugin.tool(
    description="Read the note with this title.",
    parameters={
        "type": "object",
        "properties": {"title": TITLE},
        "required": ["title"],
        "additionalProperties": False,
    },
)
def read_note(ctx, title):
    note = everruns.kv.get("note:" + title)
    if note is None:
        raise everruns.NotFound(f"no note titled {title!r}")
    return note["text"]


@plugin.tool(description="List the titles of all notes in alphabetical order.")
def list_notes(ctx):
    return [key[len("note:"):] for key in everruns.kv.keys("note:")]


@plugin.tool(
    description="Delete the note with this title.",
    parameters={
        "type": "object",
        "properties": {"title": TITLE},
        "required": ["title"],
        "additionalProperties": False,
    },
)
def delete_note(ctx, title):
    if not everruns.kv.delete("note:" + title):
        raise everruns.NotFound(f"no note titled {title!r}")
    return f"deleted {title!r}"


@plugin.before_model
def remind(ctx, request):
    titles = [key[len("note:"):] for key in everruns.kv.keys("note:")]
    if not titles:
        return everruns.Continue()
    return everruns.AddContext("Notes saved so far: " + ", ".join(titles) + ".")


@plugin.before_tool
def no_passwords(ctx, call):
    # An exception here (say, `text` is not a string) blocks the call: hooks fail closed.
    if call.name == "notes__add_note" and "password" in call.arguments.get("text", "").lower():
        return everruns.Block("notes must not hold passwords")
    return everruns.Continue()


LONG_NUMBER = re.compile(r"\d{12,}")


@plugin.after_tool
def redact_numbers(ctx, call, result):
    if call.name != "notes__read_note" or result.kind != "text":
        return None
    redacted = LONG_NUMBER.sub("[redacted]", result.value)
    return None if redacted == result.value else everruns.ToolResult.text(redacted)


Capability = plugin.export()
