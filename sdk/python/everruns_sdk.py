"""Everruns capability SDK for Python: a thin layer over componentize-py's bindings.

A plugin declares its capability, its tools (each a JSON Schema and a handler) and an
optional prompt fragment, then exports the class componentize-py looks for:

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

    Capability = plugin.export()

The SDK checks arguments against the tool's schema before the handler runs, and turns a
bad argument or an exception into a tool error for the model (never a trap). A handler
returning a `str` gives a text result; any other JSON-serialisable value a JSON result.

Host services: `kv` (durable key-value state holding JSON values), `secrets` and `log`.
"""

import inspect
import json
import re
import traceback

from componentize_py_types import Err
from wit_world import exports
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

    def export(self):
        """The class componentize-py instantiates: assign it to `Capability` in the app
        module."""
        plugin = self

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
