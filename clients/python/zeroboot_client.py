"""A small client for the HTTP API of ``zeroboot-wasm serve`` (standard library only).

Every run happens in a fresh sandbox forked from the tool's warm zygote; a run that ends
badly (timeout, trap, ...) is still an answer, with its ``status``. Errors of the API (bad
request, unknown tool, saturation, auth) raise :class:`ApiError` with the HTTP status and the
server's message.

Usage::

    from zeroboot_client import Client

    zb = Client("http://127.0.0.1:8080", api_key="...")   # api_key=None for --no-auth
    tool = zb.upload_tool("hello.wasm", name="hello", description="Says hello")
    out = zb.run(tool["id"], args=["x"], env={"GREETING": "hi"}, stdin="input")
    print(out["status"], out["exit_code"], out["stdout"])
    for r in zb.batch(tool["id"], [{"args": ["1"]}, {"args": ["2"]}]):
        print(r["stdout"])
    print(zb.exec("print(6 * 7)", language="python")["stdout"])   # ZeroBoot's /v1/exec
    print(zb.health()["status"])

Also runnable: ``python3 zeroboot_client.py URL [KEY]`` prints the server's health and tools.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Optional, Sequence

__all__ = ["Client", "ApiError"]


class ApiError(Exception):
    """An error answer of the API: ``status`` (HTTP), ``message``, and ``retry_after``
    (seconds, for 429)."""

    def __init__(self, status: int, message: str, retry_after: Optional[float] = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Client:
    """A client of one server. ``timeout`` (seconds) bounds each HTTP request."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- transport ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        content_type: Optional[str] = None,
        query: Optional[Mapping[str, str]] = None,
    ) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        req = urllib.request.Request(url, data=body, method=method)
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                data = res.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw).get("error", raw.decode("utf-8", "replace"))
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace")
            retry = e.headers.get("Retry-After")
            raise ApiError(e.code, message, float(retry) if retry else None) from None
        if not data:
            return None
        if data[:1] in (b"{", b"["):
            return json.loads(data)
        return data.decode("utf-8", "replace")

    def _json(self, method: str, path: str, payload: Any) -> Any:
        return self._request(method, path, json.dumps(payload).encode(), "application/json")

    # -- tools -------------------------------------------------------------------------

    def upload_tool(
        self,
        module: "str | os.PathLike[str] | bytes",
        name: Optional[str] = None,
        description: Optional[str] = None,
        input_schema: Optional[Mapping[str, Any]] = None,
    ) -> dict:
        """Uploads a module (a path, or its bytes: binary .wasm or text .wat); returns the
        tool ``{id, name, kind, exports, size, ...}``. Idempotent: the same bytes give the
        same tool. ``description`` and ``input_schema`` are what MCP clients see."""
        data = module if isinstance(module, (bytes, bytearray)) else open(module, "rb").read()
        query = {"name": name, "description": description}
        if input_schema is not None:
            query["input_schema"] = json.dumps(input_schema)
        return self._request(
            "POST", "/v1/tools", bytes(data), "application/wasm", query=query
        )

    def tools(self) -> list:
        """Every tool the server holds."""
        return self._request("GET", "/v1/tools")["tools"]

    def tool(self, tool_id: str) -> dict:
        return self._request("GET", f"/v1/tools/{tool_id}")

    def delete_tool(self, tool_id: str) -> None:
        self._request("DELETE", f"/v1/tools/{tool_id}")

    # -- runs --------------------------------------------------------------------------

    @staticmethod
    def task(
        args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        stdin: "str | bytes | None" = None,
        invoke: Optional[str] = None,
        limits: Optional[Mapping[str, int]] = None,
        **extra: Any,
    ) -> dict:
        """One run's request body (``extra`` passes fields this client does not name)."""
        t: dict = {"args": list(args)}
        if env:
            t["env"] = dict(env)
        if isinstance(stdin, (bytes, bytearray)):
            import base64

            t["stdin_base64"] = base64.b64encode(stdin).decode()
        elif stdin is not None:
            t["stdin"] = stdin
        if invoke:
            t["invoke"] = invoke
        if limits:
            t["limits"] = dict(limits)
        t.update(extra)
        return t

    def run(self, tool_id: str, args: Sequence[str] = (), **kwargs: Any) -> dict:
        """Runs the tool once; returns the outcome ``{status, exit_code, stdout, stderr,
        message, timings_us, ...}``. Keyword arguments are those of :meth:`task`."""
        return self._json("POST", f"/v1/tools/{tool_id}/run", self.task(args, **kwargs))

    def batch(self, tool_id: str, tasks: Iterable[Mapping[str, Any]]) -> list:
        """Runs every task (a dict as :meth:`task` makes) in its own sandbox, concurrently;
        returns the outcomes in order (an item that could not start is ``{error, status}``)."""
        return self._json("POST", f"/v1/tools/{tool_id}/batch", {"tasks": list(tasks)})["results"]

    # -- snippets (ZeroBoot-compatible) ------------------------------------------------

    def exec(
        self,
        code: str,
        language: str = "python",
        timeout_seconds: Optional[float] = None,
        stdin: Optional[str] = None,
    ) -> dict:
        """Runs a JavaScript or Python snippet: ZeroBoot's ``{stdout, stderr, exit_code,
        ...}`` plus our ``status``."""
        body: dict = {"code": code, "language": language}
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        if stdin is not None:
            body["stdin"] = stdin
        return self._json("POST", "/v1/exec", body)

    def exec_batch(self, executions: Iterable[Mapping[str, Any]]) -> list:
        """Several snippets (``{code, language, timeout_seconds}`` each), concurrently."""
        return self._json("POST", "/v1/exec/batch", {"executions": list(executions)})["results"]

    # -- operations --------------------------------------------------------------------

    def health(self) -> dict:
        """``GET /v1/health``: raises :class:`ApiError` (503) when not ready."""
        return self._request("GET", "/v1/health")

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        return self._request("GET", "/metrics")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} URL [API_KEY]")
    c = Client(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps({"health": c.health(), "tools": c.tools()}, indent=2))
