"""An MCP client built on the official Python SDK, driving Everruns' `/mcp` for the tests.

Usage: client.py URL API_KEY AGENT_ID

Connects over Streamable HTTP with `Authorization: Bearer API_KEY`, lists the tools, calls
`list_agents`, `run_agent` (counting its progress notifications), `get_run` on the run it
started, and `run_agent` with a bad argument; prints one JSON object with what each returned
(or the error it raised) on stdout.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def result_of(result):
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": [c.text for c in result.content if getattr(c, "type", "") == "text"],
    }


async def attempt(call):
    try:
        return result_of(await call)
    except Exception as e:  # noqa: BLE001 - the test reads what went wrong
        return {"exception": f"{type(e).__name__}: {e}"}


async def main(url, key, agent_id):
    out = {}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = (await client.list_tools()).tools
            out["tools"] = {t.name: t.input_schema for t in tools}
            out["list_agents"] = await attempt(client.call_tool("list_agents", {}))
            progress = []

            async def on_progress(value, total, message):
                progress.append(message)

            out["run_agent"] = await attempt(
                client.call_tool(
                    "run_agent",
                    {"agent_id": agent_id, "message": "hello over MCP"},
                    progress_callback=on_progress,
                )
            )
            out["progress"] = progress
            structured = (out["run_agent"].get("structured") or {})
            if "run_id" in structured:
                out["get_run"] = await attempt(client.call_tool("get_run", {"run_id": structured["run_id"]}))
                out["continued"] = await attempt(
                    client.call_tool(
                        "run_agent",
                        {"agent_id": agent_id, "message": "and again", "session_id": structured["session_id"]},
                    )
                )
            out["bad_argument"] = await attempt(client.call_tool("run_agent", {"agent_id": agent_id, "mesage": "typo"}))
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
