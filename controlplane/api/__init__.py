"""The Docker Engine API (v1.41) every node serves on 2375, one module per resource.

`create_app(backend)` builds the aiohttp application; the backend (`EngineBackend`) gives it the
replicated store, a way to propose transactions through Raft and what this node is.
"""

from controlplane.api.app import create_app
from controlplane.api.backend import EngineBackend, ManagerInfo, NodeInfo

__all__ = ["EngineBackend", "ManagerInfo", "NodeInfo", "create_app"]
