"""Drives an MCP server with Python's reference SDK (`mcp` on PyPI) for tests/mcp.rs.

    client.py stdio COMMAND ARGS...      (the server as a child process on stdio)
    client.py http URL [BEARER_KEY]      (Streamable HTTP)

Reads a JSON list of operations on stdin: {"op": "list"}, {"op": "call", "name": N,
"arguments": {...}}, or {"op": "upload", "url", "key", "file"} (a POST to a `serve` in the
middle of the session); prints one JSON line: the answer to each, in order — {"tools": [...]},
{"content": [texts], "isError": b, "structured": v}, or {"error": {"code", "message"}}.
"""

import json
import sys
import urllib.request

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def drive(session, ops):
    await session.initialize()
    answers = []
    for op in ops:
        try:
            if op["op"] == "upload":
                # Another door into the same store: the HTTP API of a `serve`.
                req = urllib.request.Request(
                    op["url"], data=open(op["file"], "rb").read(), method="POST",
                    headers={"Authorization": f"Bearer {op['key']}"},
                )
                with urllib.request.urlopen(req, timeout=60) as r:
                    answers.append({"uploaded": json.loads(r.read())["id"]})
            elif op["op"] == "list":
                tools = (await session.list_tools()).tools
                answers.append(
                    {
                        "tools": [
                            {
                                "name": t.name,
                                "description": t.description,
                                "inputSchema": t.input_schema if hasattr(t, "input_schema") else t.inputSchema,
                            }
                            for t in tools
                        ]
                    }
                )
            else:
                r = await session.call_tool(op["name"], op.get("arguments"))
                answers.append(
                    {
                        "content": [c.text for c in r.content if getattr(c, "type", "") == "text"],
                        "isError": bool(getattr(r, "is_error", getattr(r, "isError", False))),
                        "structured": getattr(r, "structured_content", getattr(r, "structuredContent", None)),
                    }
                )
        except MCPError as e:
            answers.append({"error": {"code": e.code, "message": e.message}})
    return answers


async def main():
    ops = json.load(sys.stdin)
    mode = sys.argv[1]
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=sys.argv[3:])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                answers = await drive(session, ops)
    else:
        headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
            async with streamable_http_client(sys.argv[2], http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    answers = await drive(session, ops)
    print(json.dumps(answers), flush=True)


anyio.run(main)
