"""The API component's side of the agents' stream endpoints: where a host's
agent listens (its Host's ``status.streamEndpoint``) and the mutual-TLS
connection to it.

The agent's certificate is checked against the stream CA and one fixed name
(:data:`~kova.crds.names.STREAM_SERVER_NAME` by default), whatever address
the Host advertises: the chart issues one agent certificate for every node,
since nodes' addresses are not known when it is installed.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from kova.crds import names
from kova.errors import Refusal


class AgentUnavailable(Refusal):
    """The host's agent cannot be reached; ``status`` for the user."""


#: The reason of an AgentUnavailable whose request reached the agent and
#: whose answer was cut off (the agent ended midway).
CONNECTION_LOST = "AgentConnectionLost"


class _Sent:
    """Whether a request's headers went out (on any of its connections)."""

    headers = False


async def _sent(session: aiohttp.ClientSession, ctx: Any, params: Any) -> None:
    if isinstance(ctx.trace_request_ctx, _Sent):
        ctx.trace_request_ctx.headers = True


def endpoint_of(host_obj: dict | None, host: str) -> tuple[str, int]:
    """(address, port) of the Host's agent, or AgentUnavailable."""
    if host_obj is None:
        raise AgentUnavailable(503, "HostNotFound", f"host {host} is not registered")
    status = host_obj.get("status") or {}
    if status.get("state") == names.HostState.DOWN:
        raise AgentUnavailable(503, "HostDown", f"host {host} is Down: its agent does not "
                               "answer")
    ep = status.get("streamEndpoint") or {}
    if not ep.get("address") or not ep.get("port"):
        raise AgentUnavailable(503, "NoStreamEndpoint", f"the agent of host {host} serves no "
                               "stream endpoint (started without --stream-cert-file)")
    return ep["address"], int(ep["port"])


class AgentClient:
    def __init__(self, cert_file: str, key_file: str, ca_file: str,
                 server_name: str = names.STREAM_SERVER_NAME) -> None:
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
        self.ssl = ctx
        self.server_name = server_name
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            traces = aiohttp.TraceConfig()
            traces.on_request_headers_sent.append(_sent)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
                trace_configs=[traces])
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def url(endpoint: tuple[str, int], path: str) -> str:
        host, port = endpoint
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}{path}"

    def _kw(self) -> dict[str, Any]:
        return {"ssl": self.ssl, "server_hostname": self.server_name}

    async def websocket(self, endpoint: tuple[str, int], path: str,
                        params: dict[str, str]) -> aiohttp.ClientWebSocketResponse:
        """A websocket to the agent, past its greeting: the agent's first
        frame says whether it could attach (``{"ok": true}``) or why not."""
        try:
            ws = await self.session.ws_connect(self.url(endpoint, path), params=params,
                                               heartbeat=30, max_msg_size=16 << 20, **self._kw())
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentUnavailable(503, "AgentUnreachable",
                                   f"cannot reach the agent at {endpoint[0]}:{endpoint[1]}: "
                                   f"{exc}") from exc
        msg = await ws.receive(timeout=30)
        hello: dict = {}
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                hello = json.loads(msg.data)
            except ValueError:
                hello = {}
        if not hello.get("ok"):
            await ws.close()
            raise AgentUnavailable(int(hello.get("status") or 502),
                                   hello.get("reason") or "AgentError",
                                   hello.get("message") or "the agent closed the connection")
        return ws

    async def put(self, endpoint: tuple[str, int], path: str,
                  params: dict[str, str]) -> tuple[int, dict]:
        """The agent's answer; AgentUnavailable with reason
        :data:`CONNECTION_LOST` when the request reached the agent and the
        connection was cut off before its answer (aiohttp tries an
        idempotent request once more on a new connection: that one failing
        to connect still means the first was sent)."""
        sent = _Sent()
        try:
            async with self.session.put(self.url(endpoint, path), params=params,
                                        trace_request_ctx=sent, **self._kw()) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            if sent.headers:
                raise AgentUnavailable(503, CONNECTION_LOST,
                                       f"the connection to the agent at {endpoint[0]}:"
                                       f"{endpoint[1]} was lost, and it does not answer "
                                       f"again: {exc}") from exc
            raise AgentUnavailable(503, "AgentUnreachable",
                                   f"cannot reach the agent at {endpoint[0]}:{endpoint[1]}: "
                                   f"{exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Connected, then cut off: the agent may have done (part of) the work.
            raise AgentUnavailable(503, CONNECTION_LOST,
                                   f"the connection to the agent at {endpoint[0]}:"
                                   f"{endpoint[1]} was lost: {exc or type(exc).__name__}"
                                   ) from exc
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, {"message": body.decode(errors="replace")}

    async def get_stream(self, endpoint: tuple[str, int], path: str,
                         params: dict[str, str]) -> aiohttp.ClientResponse:
        """A streamed GET (the caller reads and releases it)."""
        try:
            resp = await self.session.get(self.url(endpoint, path), params=params, **self._kw())
        except (aiohttp.ClientError, OSError) as exc:
            raise AgentUnavailable(503, "AgentUnreachable",
                                   f"cannot reach the agent at {endpoint[0]}:{endpoint[1]}: "
                                   f"{exc}") from exc
        if resp.status != 200:
            try:
                body = json.loads(await resp.read())
            except ValueError:
                body = {}
            resp.release()
            raise AgentUnavailable(resp.status, body.get("reason") or "AgentError",
                                   body.get("message") or f"the agent answered {resp.status}")
        return resp
