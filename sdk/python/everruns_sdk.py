"""Everruns capability SDK for Python: a thin layer over componentize-py's bindings of
`everruns:capability@0.2.0` (world `plugin`, `wit/0.2.0`).

A plugin declares its capability, its tools (each a JSON Schema and a handler), an
optional prompt fragment and optional hooks, then exports the classes componentize-py
looks for:

    import everruns_sdk as everruns

    plugin = everruns.Plugin("greeter", "0.1.0", "Greets people")

    @plugin.tool(
        description="Greet someone by name.",
        parameters={
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}},
            "required": ["name"],
        },
    )
    def greet(ctx, name):
        return f"Hello, {name}!"

    @plugin.before_tool
    def no_strangers(ctx, call):
        if call.arguments.get("name") == "Mallory":
            return everruns.Block("we do not greet Mallory")
        return everruns.Continue()

    Capability = plugin.export()

`plugin.export()` returns the `Capability` class and also defines `Hooks` in the calling
module (componentize-py looks for both there); a hook that is not registered answers
"continue" / "keep".

The SDK checks arguments against the tool's schema before the handler runs, and turns a
bad argument or an exception into a tool error for the model (never a trap). A handler
returning a `str` gives a text result; any other JSON-serialisable value a JSON result.

An exception raised in a hook fails closed: `before_model` and `before_tool` answer
`block` with the exception, `after_tool` replaces the result with an error naming it; the
traceback goes to the log.

Host services: `kv` (durable key-value state holding JSON values), `secrets` and `log`.
"""

import inspect
import json
import re
import sys
import traceback

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports import hooks as _hooks
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import secrets as _secrets
from wit_world.imports import types as _types

__all__ = [
    "Plugin",
    "Context",
    "ToolError",
    "InvalidArguments",
    "NotFound",
    "Failed",
    "Denied",
    "KvError",
    "SecretError",
    "Continue",
    "AddContext",
    "Block",
    "Rewrite",
    "RequireApproval",
    "ModelRequest",
    "ToolRequest",
    "ToolResult",
    "kv",
    "secrets",
    "log",
]


# --- Errors a handler may raise --------------------------------------------------------


class ToolError(Exception):
    """An error for the model. Raise a subclass to choose the kind."""

    kind = _types.ToolError_Failed

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)


class InvalidArguments(ToolError):
    """The arguments did not make sense (the schema check already ran)."""

    kind = _types.ToolError_InvalidArguments


class NotFound(ToolError):
    """The thing the tool was asked about does not exist."""

    kind = _types.ToolError_NotFound


class Failed(ToolError):
    """The tool tried and failed."""

    kind = _types.ToolError_Failed


class Denied(ToolError):
    """The plugin refuses (for example, it lacks a permission or a secret)."""

    kind = _types.ToolError_Denied


class KvError(Failed):
    """A key-value operation failed. Unhandled in a tool, it becomes a `failed` error."""


class SecretError(Denied):
    """A secret is not granted or has no value. Unhandled, it becomes a `denied` error."""


# --- Host services ---------------------------------------------------------------------


def _kv_error(err):
    value = err.value
    if isinstance(value, _kv.KvError_NotGranted):
        return KvError("key-value state is not granted (set `kv = true` in capability.toml)")
    if isinstance(value, _kv.KvError_TooLarge):
        return KvError(f"key-value limit exceeded: {value.value}")
    return KvError(f"key-value backend failed: {value.value}")


class _Kv:
    """Durable key-value state holding JSON values, scoped by the host to this plugin and
    to the agent or session (`kv_scope` in capability.toml)."""

    def get(self, key, default=None):
        """The value stored under `key`, or `default` when it is not set."""
        try:
            raw = _kv.get(key)
        except Err as e:
            raise _kv_error(e) from None
        if raw is None:
            return default
        return json.loads(raw.decode("utf-8"))

    def set(self, key, value):
        """Stores `value` (anything `json.dumps` accepts) under `key`."""
        data = json.dumps(value, separators=(",", ":")).encode("utf-8")
        try:
            _kv.set(key, data)
        except Err as e:
            raise _kv_error(e) from None

    def delete(self, key):
        """Removes `key`; returns whether it existed."""
        try:
            return _kv.delete(key)
        except Err as e:
            raise _kv_error(e) from None

    def keys(self, prefix=""):
        """The keys starting with `prefix`, sorted (at most 1000)."""
        try:
            return list(_kv.list_keys(prefix))
        except Err as e:
            raise _kv_error(e) from None


class _Secrets:
    """Named secrets the operator granted to this plugin."""

    def get(self, name):
        """The secret's value; raises `SecretError` if not granted or not set."""
        try:
            return _secrets.get(name)
        except Err as e:
            if isinstance(e.value, _secrets.SecretError_NotGranted):
                raise SecretError(f"secret `{name}` is not granted") from None
            raise SecretError(f"secret `{name}` has no value") from None


class _Log:
    """Log lines recorded with the tool step in the run's trace."""

    def trace(self, message):
        _log.log(_log.Level.TRACE, str(message))

    def debug(self, message):
        _log.log(_log.Level.DEBUG, str(message))

    def info(self, message):
        _log.log(_log.Level.INFO, str(message))

    def warn(self, message):
        _log.log(_log.Level.WARN, str(message))

    def error(self, message):
        _log.log(_log.Level.ERROR, str(message))


kv = _Kv()
secrets = _Secrets()
log = _Log()


# --- Call context ----------------------------------------------------------------------


class Context:
    """Who is calling: `agent_id`, `session_id`, `run_id`, `idempotency_key` (stable
    across retries of one tool step; `None` outside tool calls) and `config` (the
    plugin's configuration for this agent, a dict)."""

    def __init__(self, ctx):
        self.agent_id = ctx.agent_id
        self.session_id = ctx.session_id
        self.run_id = ctx.run_id
        self.idempotency_key = ctx.idempotency_key
        try:
            self.config = json.loads(ctx.config) if ctx.config else {}
        except ValueError:
            self.config = {}

    def __repr__(self):
        return (
            f"Context(agent_id={self.agent_id!r}, session_id={self.session_id!r}, "
            f"run_id={self.run_id!r})"
        )


# --- Argument checking -----------------------------------------------------------------

_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _json_type(value):
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _is_type(value, name):
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return _json_type(value) == name


def _where(path):
    return f"`{path}`" if path else "the arguments"


def _check(schema, value, path):
    """The first way `value` violates `schema`, as a message naming the field, or None.

    Supports the keywords tool schemas use: type, enum, const, properties, required,
    additionalProperties, items, min/maxItems, min/maxLength, pattern, minimum, maximum,
    exclusiveMinimum, exclusiveMaximum. Other keywords are not enforced."""
    if not isinstance(schema, dict):
        return None
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_is_type(value, n) for n in names):
            return f"{_where(path)}: expected {' or '.join(names)}, got {_json_type(value)}"
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        return f"{_where(path)}: must be one of {allowed}"
    if "const" in schema and value != schema["const"]:
        return f"{_where(path)}: must be {json.dumps(schema['const'])}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                return f"{_where(_join(path, name))}: required"
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = _join(path, name)
            if name in props:
                problem = _check(props[name], item, sub)
            elif extra is False:
                problem = f"{_where(sub)}: unknown field"
            else:
                problem = _check(extra, item, sub)
            if problem:
                return problem
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            return f"{_where(path)}: needs at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{_where(path)}: allows at most {schema['maxItems']} items"
        for i, item in enumerate(value):
            problem = _check(schema.get("items"), item, f"{path}[{i}]")
            if problem:
                return problem
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{_where(path)}: must be at least {schema['minLength']} characters"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{_where(path)}: must be at most {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{_where(path)}: must match {schema['pattern']}"
    if _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{_where(path)}: must be >= {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{_where(path)}: must be <= {schema['maximum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{_where(path)}: must be > {schema['exclusiveMinimum']}"
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            return f"{_where(path)}: must be < {schema['exclusiveMaximum']}"
    return None


def _join(path, name):
    return f"{path}.{name}" if path else name


# --- Hook decisions and requests ------------------------------------------------------


class Continue:
    """A hook's answer: go on as planned (`None` means the same)."""

    def __repr__(self):
        return "Continue()"


class AddContext:
    """A `before_model` answer: append `text` to the system prompt, for this model call
    only."""

    def __init__(self, text):
        self.text = str(text)

    def __repr__(self):
        return f"AddContext({self.text!r})"


class Block:
    """A `before_model` or `before_tool` answer: stop. Before a model call the run ends as
    failed with the reason; before a tool call the model gets a result stating it."""

    def __init__(self, reason):
        self.reason = str(reason)

    def __repr__(self):
        return f"Block({self.reason!r})"


class Rewrite:
    """A `before_tool` answer: run the call with these arguments (a dict) instead."""

    def __init__(self, arguments):
        self.arguments = arguments

    def __repr__(self):
        return f"Rewrite({self.arguments!r})"


class RequireApproval:
    """A `before_tool` answer: a person must approve the call first (the run waits until
    someone approves or rejects it, or the approval expires)."""

    def __init__(self, reason):
        self.reason = str(reason)

    def __repr__(self):
        return f"RequireApproval({self.reason!r})"


class ModelRequest:
    """What the model is about to be asked: `last_user_message` (the user message that
    started the run), `tools` (the namespaced tool names offered, `<capability>__<tool>`)
    and `step` (the step number of this model call, 0 for the first)."""

    def __init__(self, request):
        self.last_user_message = request.last_user_message
        self.tools = list(request.tools)
        self.step = request.step

    def __repr__(self):
        return f"ModelRequest(step={self.step}, tools={self.tools!r})"


class ToolRequest:
    """A tool call the model asked for: `name` (namespaced, `<capability>__<tool>`; hooks
    see the calls of every capability of the agent), `arguments` (the parsed JSON, normally
    a dict, after earlier hooks' rewrites), `tool_call_id` and `step`."""

    def __init__(self, call):
        self.name = call.name
        try:
            self.arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            self.arguments = call.arguments
        self.tool_call_id = call.tool_call_id
        self.step = call.step

    def __repr__(self):
        return f"ToolRequest(name={self.name!r}, arguments={self.arguments!r})"


class ToolResult:
    """A tool's result as `after_tool` sees it, and one way to replace it. `kind` is
    `"text"`, `"json"` or `"error"`; `value` is the text (a str) or the JSON value of a
    success, `error` the message the model would see for a failure; `ok` is whether it
    succeeded. Build replacements with `ToolResult.text(s)`, `ToolResult.json(value)` and
    `ToolResult.error(message)`."""

    def __init__(self, kind, value=None, error=None):
        self.kind = kind
        self.value = value
        self.error = error

    @property
    def ok(self):
        return self.kind != "error"

    @classmethod
    def text(cls, text):
        return cls("text", value=str(text))

    @classmethod
    def json(cls, value):
        return cls("json", value=value)

    @classmethod
    def error(cls, message):
        return cls("error", error=str(message))

    def __eq__(self, other):
        return isinstance(other, ToolResult) and (self.kind, self.value, self.error) == (
            other.kind,
            other.value,
            other.error,
        )

    def __repr__(self):
        if self.kind == "error":
            return f"ToolResult.error({self.error!r})"
        return f"ToolResult.{self.kind}({self.value!r})"


def _result_from_wit(result):
    if isinstance(result, Err):
        return ToolResult.error(result.value)
    output = result.value
    if isinstance(output, _types.ToolOutput_Json):
        try:
            return ToolResult.json(json.loads(output.value))
        except ValueError:
            return ToolResult.text(output.value)
    return ToolResult.text(output.value)


def _result_to_wit(result):
    """`after_tool`'s answer as the WIT `option<tool-result>`: None keeps the result, a
    `ToolResult` replaces it, a str is a text result, any other JSON value a JSON one."""
    if result is None:
        return None
    if not isinstance(result, ToolResult):
        result = ToolResult.text(result) if isinstance(result, str) else ToolResult.json(result)
    if result.kind == "error":
        return Err(result.error)
    if result.kind == "text":
        return Ok(_types.ToolOutput_Text(str(result.value)))
    return Ok(_types.ToolOutput_Json(json.dumps(result.value)))


def _hook_failed(hook, e):
    """Logs the traceback of an exception raised in a hook; returns its one-line text."""
    log.error(f"hook `{hook}` raised:\n{traceback.format_exc()}")
    return f"hook `{hook}` failed: {type(e).__name__}: {e}"


# --- The plugin ------------------------------------------------------------------------


class _Tool:
    def __init__(self, name, description, parameters, handler):
        self.name = name
        self.description = description
        self.parameters = parameters
        self.schema_json = json.dumps(parameters)
        self.handler = handler
        self.signature = inspect.signature(handler)


_NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


class Plugin:
    """A capability: its identity (must match capability.toml), tools and prompt."""

    def __init__(self, id, version, description=""):
        self.id = id
        self.version = version
        self.description = description
        self._tools = {}
        self._prompt = None
        self._hooks = {}

    def tool(self, name=None, *, description, parameters=None):
        """Registers a tool. The decorated function is called as `handler(ctx, **args)`
        after `args` passed the JSON Schema `parameters` (default: no arguments). `name`
        defaults to the function's name."""

        def register(handler):
            tool_name = name or handler.__name__
            if tool_name in self._tools:
                raise ValueError(f"tool `{tool_name}` is registered twice")
            schema = parameters if parameters is not None else _NO_ARGUMENTS
            if schema.get("type") != "object":
                raise ValueError(f"tool `{tool_name}`: parameters must be an object schema")
            self._tools[tool_name] = _Tool(tool_name, description, schema, handler)
            return handler

        return register

    def prompt(self, fragment):
        """Registers the system-prompt fragment: a function `fragment(ctx)` returning a
        string (or None for no fragment)."""
        self._prompt = fragment
        return fragment

    def _hook(self, name, handler):
        if name in self._hooks:
            raise ValueError(f"hook `{name}` is registered twice")
        self._hooks[name] = handler
        return handler

    def before_model(self, handler):
        """Registers the `before-model` hook, `handler(ctx, request)` with a
        `ModelRequest`, called before each model call. It returns `Continue()` (or None),
        `AddContext(text)` or `Block(reason)`. List `"before-model"` in the manifest's
        `hooks`."""
        return self._hook("before-model", handler)

    def before_tool(self, handler):
        """Registers the `before-tool` hook, `handler(ctx, call)` with a `ToolRequest`,
        called before each tool call of the agent runs. It returns `Continue()` (or None),
        `Rewrite(arguments)`, `Block(reason)` or `RequireApproval(reason)`. List
        `"before-tool"` in the manifest's `hooks`."""
        return self._hook("before-tool", handler)

    def after_tool(self, handler):
        """Registers the `after-tool` hook, `handler(ctx, call, result)` with a
        `ToolRequest` and a `ToolResult`, called after each tool call of the agent. It
        returns None to keep the result, or its replacement: a `ToolResult`, a str (a text
        result) or any other JSON value (a JSON result). List `"after-tool"` in the
        manifest's `hooks`."""
        return self._hook("after-tool", handler)

    def export(self):
        """The class componentize-py instantiates for `capability`: assign it to
        `Capability` in the app module. Also defines `Hooks` (the `hooks` export) in the
        calling module unless it already has one."""
        plugin = self
        caller = sys._getframe(1).f_globals
        caller.setdefault("Hooks", self._export_hooks())

        class Capability(exports.Capability):
            def info(self):
                return _types.CapabilityInfo(plugin.id, plugin.version, plugin.description)

            def system_prompt(self, ctx):
                if plugin._prompt is None:
                    return None
                text = plugin._prompt(Context(ctx))
                return None if text is None else str(text)

            def tools(self, ctx):
                return [
                    _types.ToolSpec(t.name, t.description, t.schema_json)
                    for t in plugin._tools.values()
                ]

            def call_tool(self, ctx, call):
                return plugin._call(ctx, call)

        return Capability

    def _export_hooks(self):
        plugin = self

        class Hooks(exports.Hooks):
            def before_model(self, ctx, request):
                return plugin._before_model(ctx, request)

            def before_tool(self, ctx, call):
                return plugin._before_tool(ctx, call)

            def after_tool(self, ctx, call, result):
                return plugin._after_tool(ctx, call, result)

        return Hooks

    def _before_model(self, ctx, request):
        handler = self._hooks.get("before-model")
        if handler is None:
            return _hooks.ModelDecision_Continue()
        try:
            decision = handler(Context(ctx), ModelRequest(request))
            if decision is None or isinstance(decision, Continue):
                return _hooks.ModelDecision_Continue()
            if isinstance(decision, AddContext):
                return _hooks.ModelDecision_AddContext(decision.text)
            if isinstance(decision, Block):
                return _hooks.ModelDecision_Block(decision.reason)
            raise TypeError(
                f"before_model returned {decision!r}; expected Continue(), AddContext(text) "
                "or Block(reason)"
            )
        except Exception as e:
            return _hooks.ModelDecision_Block(_hook_failed("before-model", e))

    def _before_tool(self, ctx, call):
        handler = self._hooks.get("before-tool")
        if handler is None:
            return _hooks.ToolDecision_Continue()
        try:
            decision = handler(Context(ctx), ToolRequest(call))
            if decision is None or isinstance(decision, Continue):
                return _hooks.ToolDecision_Continue()
            if isinstance(decision, Rewrite):
                if not isinstance(decision.arguments, dict):
                    raise TypeError(
                        f"Rewrite needs a dict of arguments, got {_json_type(decision.arguments)}"
                    )
                return _hooks.ToolDecision_Rewrite(json.dumps(decision.arguments))
            if isinstance(decision, Block):
                return _hooks.ToolDecision_Block(decision.reason)
            if isinstance(decision, RequireApproval):
                return _hooks.ToolDecision_RequireApproval(decision.reason)
            raise TypeError(
                f"before_tool returned {decision!r}; expected Continue(), Rewrite(arguments), "
                "Block(reason) or RequireApproval(reason)"
            )
        except Exception as e:
            return _hooks.ToolDecision_Block(_hook_failed("before-tool", e))

    def _after_tool(self, ctx, call, result):
        handler = self._hooks.get("after-tool")
        if handler is None:
            return None
        try:
            replacement = handler(Context(ctx), ToolRequest(call), _result_from_wit(result))
            return _result_to_wit(replacement)
        except Exception as e:
            return Err(_hook_failed("after-tool", e))

    def _call(self, ctx, call):
        tool = self._tools.get(call.name)
        if tool is None:
            raise Err(_types.ToolError_NotFound(f"no tool named `{call.name}`"))
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as e:
            raise Err(_types.ToolError_InvalidArguments(f"arguments are not JSON: {e}"))
        problem = _check(tool.parameters, args, "")
        if problem:
            raise Err(_types.ToolError_InvalidArguments(problem))
        try:
            bound = tool.signature.bind(Context(ctx), **args)
        except TypeError as e:
            raise Err(_types.ToolError_InvalidArguments(str(e)))
        try:
            result = tool.handler(*bound.args, **bound.kwargs)
        except ToolError as e:
            raise Err(e.kind(e.message))
        except Exception as e:
            log.error(f"tool `{call.name}` raised:\n{traceback.format_exc()}")
            raise Err(_types.ToolError_Failed(f"{type(e).__name__}: {e}"))
        if isinstance(result, str):
            return _types.ToolOutput_Text(result)
        try:
            return _types.ToolOutput_Json(json.dumps(result))
        except (TypeError, ValueError) as e:
            raise Err(_types.ToolError_Failed(f"tool returned a value that is not JSON: {e}"))
