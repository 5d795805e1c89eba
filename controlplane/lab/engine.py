"""A small client of one node's Docker Engine API, for the lab and the tests: what the
`docker` CLI would send, without needing the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from controlplane.api.logs import unframe

API = "/v1.41"


class EngineError(Exception):
    """The engine answered with an error; `str()` is its message, as the CLI prints it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decoded(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


class EngineClient:
    def __init__(
        self, address: str, timeout: float = 60.0, *, unix_socket: Path | None = None
    ) -> None:
        """`address` is host:2375; with `unix_socket` the API is reached on that socket
        instead (a reference dockerd in its own network namespace answers only there)."""
        self.address = address
        connector = aiohttp.UnixConnector(path=str(unix_socket)) if unix_socket else None
        self._session = aiohttp.ClientSession(
            f"http://{address}", connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        *,
        versioned: bool = True,
        tar: bytes | None = None,
    ) -> Any:
        """`path` under /v1.41, or as it is when not `versioned` (the lab's /swarmlab/); the
        body is `body` as JSON or a `tar` archive (`/images/create?fromSrc=-`). The answer
        is its JSON, or its text when it is not one JSON document (a progress stream)."""
        data, headers = None, {}
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif tar is not None:
            data, headers = tar, {"Content-Type": "application/x-tar"}
        url = API + path if versioned else path
        async with self._session.request(
            method, url, data=data, params=params, headers=headers
        ) as response:
            raw = await response.read()
            parsed = _decoded(raw)
            if response.status >= 400:
                message = parsed.get("message", "") if isinstance(parsed, dict) else raw.decode()
                raise EngineError(response.status, message)
            return parsed

    async def ping(self) -> bool:
        try:
            async with self._session.get("/_ping") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.request("GET", "/info")
        return info

    async def swarm_init(self, advertise: str, **spec: Any) -> str:
        body = {"ListenAddr": "0.0.0.0:2377", "AdvertiseAddr": advertise, **spec}
        node_id: str = await self.request("POST", "/swarm/init", body)
        return node_id

    async def join_tokens(self) -> dict[str, str]:
        swarm = await self.request("GET", "/swarm")
        tokens: dict[str, str] = swarm["JoinTokens"]
        return tokens

    async def swarm_join(self, manager: str, token: str, advertise: str, **spec: Any) -> None:
        body = {
            "ListenAddr": "0.0.0.0:2377",
            "AdvertiseAddr": advertise,
            "RemoteAddrs": [manager],
            "JoinToken": token,
            **spec,
        }
        await self.request("POST", "/swarm/join", body)

    async def swarm_leave(self, force: bool = False) -> None:
        await self.request("POST", "/swarm/leave", params={"force": "1"} if force else None)

    async def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = await self.request("GET", "/nodes")
        return nodes

    async def create_network(self, name: str, driver: str = "overlay") -> str:
        created = await self.request("POST", "/networks/create", {"Name": name, "Driver": driver})
        return str(created["Id"])

    async def remove_network(self, name: str) -> None:
        await self.request("DELETE", f"/networks/{name}")

    async def networks(self) -> list[dict[str, Any]]:
        """The swarm's networks (`--filter scope=swarm`): not the node's own local ones,
        which differ from node to node."""
        networks: list[dict[str, Any]] = await self.request(
            "GET", "/networks", params={"filters": json.dumps({"scope": {"swarm": True}})}
        )
        return networks

    # ---- the lab's admin API (controlplane/api/lab.py) -------------------------------------

    async def faults(self) -> dict[str, Any]:
        plan: dict[str, Any] = await self.request("GET", "/swarmlab/faults", versioned=False)
        return plan

    async def set_faults(self, plan: dict[str, Any]) -> dict[str, Any]:
        installed: dict[str, Any] = await self.request(
            "PUT", "/swarmlab/faults", plan, versioned=False
        )
        return installed

    async def gossip(self) -> dict[str, Any]:
        view: dict[str, Any] = await self.request("GET", "/swarmlab/gossip", versioned=False)
        return view

    async def raft(self) -> dict[str, Any]:
        status: dict[str, Any] = await self.request("GET", "/swarmlab/raft", versioned=False)
        return status

    async def datapath(self) -> dict[str, Any]:
        """The node's data path program (`/swarmlab/datapath`)."""
        shown: dict[str, Any] = await self.request("GET", "/swarmlab/datapath", versioned=False)
        return shown

    async def service_logs(self, service: str) -> str:
        """A service's stdout and stderr lines, as `docker service logs --raw` prints them
        (the API's multiplexed stream: 8-byte headers, then the line)."""
        params = {"stdout": "1", "stderr": "1"}
        async with self._session.get(f"{API}/services/{service}/logs", params=params) as response:
            raw = await response.read()
            if response.status >= 400:
                raise EngineError(response.status, json.loads(raw).get("message", ""))
        return "".join(payload.decode(errors="replace") for _stream, payload in unframe(raw))
