"""`/swarm`: inspect, init, join, leave, update (join token rotation) and the unlock key.

Init, join and leave change what the node process is, so they go to its `SwarmControl`;
inspect and update are ordinary reads and writes of the replicated Cluster object.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.api.backend import NodeInfo, SwarmControl, SwarmInit, SwarmJoin
from controlplane.api.common import (
    add_route,
    go_time,
    json_body,
    json_response,
    require_manager,
)
from controlplane.api.errors import ApiError, bad_request, from_store_error, rpc_error
from controlplane.manager import cluster as clusters
from controlplane.manager.ca import MANAGER_ROLE, WORKER_ROLE
from controlplane.manager.tasks import history_limit
from controlplane.numbers import INT64_MAX, UINT64_MAX, is_number
from controlplane.pb.objects_pb2 import Cluster
from controlplane.store import Store, StoreError, Transaction

CONTROL: web.AppKey[SwarmControl] = web.AppKey("swarm_control", SwarmControl)


def register(app: web.Application, control: SwarmControl | None) -> None:
    add_route(app, "GET", "/swarm", inspect_swarm)
    add_route(app, "POST", "/swarm/update", update_swarm)
    add_route(app, "GET", "/swarm/unlockkey", unlock_key)
    if control is None:
        return
    app[CONTROL] = control
    add_route(app, "POST", "/swarm/init", init_swarm)
    add_route(app, "POST", "/swarm/join", join_swarm)
    add_route(app, "POST", "/swarm/leave", leave_swarm)


def tls_info(cluster: Cluster) -> dict[str, str]:
    pem = cluster.root_ca.ca_cert_pem
    if not pem:
        return {"TrustRoot": "", "CertIssuerSubject": "", "CertIssuerPublicKey": ""}
    cert = x509.load_pem_x509_certificate(pem)
    public_key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "TrustRoot": pem.decode(),
        "CertIssuerSubject": base64.b64encode(cert.subject.public_bytes()).decode(),
        "CertIssuerPublicKey": base64.b64encode(public_key).decode(),
    }


def cluster_json(info: NodeInfo, store: Store) -> dict[str, Any]:
    """The Cluster as `/info` (Swarm.Cluster) and `/swarm` show it, without join tokens."""
    cluster = clusters.the_cluster(store) or Cluster(id=info.cluster_id)
    spec = cluster.spec
    raft = spec.raft
    return {
        "ID": cluster.id or info.cluster_id,
        "Version": {"Index": cluster.meta.version.index},
        "CreatedAt": go_time(cluster.meta.created_at_ns),
        "UpdatedAt": go_time(cluster.meta.updated_at_ns),
        "Spec": {
            "Name": spec.annotations.name or "default",
            "Labels": dict(spec.annotations.labels),
            "Orchestration": {"TaskHistoryRetentionLimit": history_limit(cluster)},
            "Raft": {
                # 0 (the default) is left out, as dockerd's omitempty does
                **({"SnapshotInterval": raft.snapshot_interval} if raft.snapshot_interval else {}),
                "KeepOldSnapshots": raft.keep_old_snapshots,
                "LogEntriesForSlowFollowers": raft.log_entries_for_slow_followers or 500,
                "ElectionTick": raft.election_tick or 10,
                "HeartbeatTick": raft.heartbeat_tick or 1,
            },
            "Dispatcher": (
                {"HeartbeatPeriod": spec.dispatcher_heartbeat_period_ns}
                if spec.dispatcher_heartbeat_period_ns
                else {}
            ),
            "CAConfig": {"NodeCertExpiry": clusters.node_cert_validity_ns(cluster)},
            "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": False},
        },
        "TLSInfo": tls_info(cluster),
        "RootRotationInProgress": False,
        # as swarmkit: none unless `--default-addr-pool` gave some (10.0.0.0/8 is used then)
        "DefaultAddrPool": list(cluster.default_address_pool) or None,
        "SubnetSize": cluster.subnet_size or clusters.DEFAULT_SUBNET_SIZE,
        "DataPathPort": cluster.data_path_port or clusters.DEFAULT_DATA_PATH_PORT,
    }


async def inspect_swarm(request: web.Request) -> web.Response:
    b = require_manager(request)
    body = cluster_json(b.node_info(), b.store)
    cluster = clusters.the_cluster(b.store) or Cluster()
    body["JoinTokens"] = {
        "Worker": cluster.root_join_tokens.worker,
        "Manager": cluster.root_join_tokens.manager,
    }
    return json_response(body)


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise bad_request(f"invalid value for {name}: {value!r} (expected true or false)")


async def update_swarm(request: web.Request) -> web.Response:
    """`docker swarm join-token --rotate` and `docker swarm update`: the Cluster at the
    version the client read (a stale version is Docker's "update out of sequence")."""
    b = require_manager(request)
    version_text = request.query.get("version", "")
    if not is_number(version_text) or int(version_text) > UINT64_MAX:
        raise bad_request(f"invalid swarm version {version_text!r}: a number is required")
    body = await json_body(request)
    cluster = clusters.the_cluster(b.store)
    if cluster is None:
        raise ApiError(503, "the swarm has no Cluster object yet; retry in a moment")
    updated = Cluster()
    updated.CopyFrom(cluster)
    updated.meta.version.index = int(version_text)
    _apply_spec(updated, body)
    join_tokens = clusters.join_tokens(cluster)
    if _flag(request, "rotateWorkerToken"):
        join_tokens = join_tokens.rotate(WORKER_ROLE)
    if _flag(request, "rotateManagerToken"):
        join_tokens = join_tokens.rotate(MANAGER_ROLE)
    updated = clusters.with_join_tokens(updated, join_tokens)
    error = StoreError.from_result(await b.propose(Transaction().update(updated).encode()))
    if error is not None:
        raise from_store_error(error)
    return web.Response(status=200)


def _apply_spec(cluster: Cluster, body: dict[str, Any]) -> None:
    """The parts of a ClusterSpec we model; settings Swarmlab does not emulate are refused
    when they ask for something (autolock, old snapshots, an external CA); other fields are
    ignored, as unknown ones are by dockerd."""
    _refuse_unemulated(body)
    labels = body.get("Labels")
    if isinstance(labels, dict):
        cluster.spec.annotations.labels.clear()
        cluster.spec.annotations.labels.update({str(k): str(v) for k, v in labels.items()})
    # The body is the whole spec, as dockerd takes it: a setting left out (the CLI leaves
    # out a zero, `--dispatcher-heartbeat 0s`) is 0, which means the default.
    cluster.spec.raft.snapshot_interval = _int(body, "Raft", "SnapshotInterval")
    cluster.spec.dispatcher_heartbeat_period_ns = _int(body, "Dispatcher", "HeartbeatPeriod")
    limit = _history_limit(body)
    if limit is not None:
        cluster.spec.task_history_retention_limit = limit
    expiry = _cert_expiry(body)
    if expiry:
        cluster.spec.node_cert_expiry_ns = expiry


def _history_limit(spec: dict[str, Any]) -> int | None:
    """Orchestration.TaskHistoryRetentionLimit (`--task-history-limit`), None if not given."""
    orchestration = spec.get("Orchestration")
    if not isinstance(orchestration, dict) or "TaskHistoryRetentionLimit" not in orchestration:
        return None
    limit = orchestration["TaskHistoryRetentionLimit"]
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not -INT64_MAX - 1 <= limit <= INT64_MAX
    ):
        raise bad_request(
            "invalid Orchestration.TaskHistoryRetentionLimit: expected a 64-bit integer"
        )
    return limit


def _cert_expiry(spec: dict[str, Any]) -> int:
    """CAConfig.NodeCertExpiry (`--cert-expiry`) in ns, 0 if not given; swarmkit's minimum."""
    expiry = _int(spec, "CAConfig", "NodeCertExpiry")
    if expiry and expiry < clusters.MIN_NODE_CERT_EXPIRY_NS:
        raise rpc_error("InvalidArgument", "minimum certificate expiry time is: 1h0m0s")
    return expiry


def _refuse_unemulated(body: dict[str, Any]) -> None:
    """A clear error for what `docker swarm update` can ask and Swarmlab does not do."""
    encryption = body.get("EncryptionConfig")
    if isinstance(encryption, dict) and encryption.get("AutoLockManagers") is True:
        raise bad_request(
            "autolock is not emulated by Swarmlab: its managers keep their keys unencrypted "
            "on disk; leave --autolock off"
        )
    if _int(body, "Raft", "KeepOldSnapshots"):
        raise bad_request(
            "Swarmlab keeps only the latest Raft snapshot: --max-snapshots is not emulated; "
            "leave it at 0"
        )
    ca_config = body.get("CAConfig")
    if isinstance(ca_config, dict) and (
        ca_config.get("ExternalCAs") or ca_config.get("SigningCACert")
    ):
        raise bad_request(
            "an external or user-given CA is not emulated by Swarmlab: its managers sign node "
            "certificates with the swarm's own root CA"
        )


async def unlock_key(request: web.Request) -> web.Response:
    """Autolock is not emulated: the key is always empty, as Docker's when autolock is off."""
    require_manager(request)
    return json_response({"UnlockKey": ""})


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise bad_request(f"invalid {key}: expected a string, got {type(value).__name__}")
    return value


def _int(body: dict[str, Any], *path: str) -> int:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT64_MAX:
        raise bad_request(f"invalid {'.'.join(path)}: expected a non-negative integer below 2^63")
    return value


def _availability(body: dict[str, Any]) -> str:
    value = _text(body, "Availability")
    if value not in ("", "active", "pause", "drain"):
        raise bad_request(f"invalid Availability {value!r}: expected active, pause or drain")
    return value


def _check_pools(pools: list[str], subnet_size: int) -> None:
    """`--default-addr-pool` and `--default-addr-pool-mask-length`, checked before anything
    is created: IPv4 CIDRs, not overlapping, each able to hold subnets of the size asked."""
    networks: list[ipaddress.IPv4Network] = []
    for pool in pools:
        try:
            network = ipaddress.IPv4Network(pool, strict=False)
        except ValueError as err:
            raise bad_request(f"invalid default address pool {pool!r}: {err}") from None
        for other in networks:
            if network.overlaps(other):
                raise bad_request(f"default address pools {other} and {network} overlap")
        networks.append(network)
    if subnet_size and not 0 < subnet_size <= 29:
        raise bad_request(
            f"invalid subnet size {subnet_size}: a default address pool mask length is 1 to 29"
        )
    size = subnet_size or clusters.DEFAULT_SUBNET_SIZE
    for network in networks:
        if size < network.prefixlen:
            raise bad_request(
                f"subnet size /{size} is larger than the default address pool {network}; "
                f"use a mask length of at least {network.prefixlen}"
            )


async def init_swarm(request: web.Request) -> web.Response:
    body = await json_body(request)
    pools = body.get("DefaultAddrPool") or []
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise bad_request("invalid DefaultAddrPool: expected a list of CIDR strings")
    subnet_size = _int(body, "SubnetSize")
    _check_pools(pools, subnet_size)
    data_path_port = _int(body, "DataPathPort")
    if data_path_port and not 1024 <= data_path_port <= 49151:
        raise bad_request(f"invalid data path port {data_path_port}: it must be within 1024-49151")
    spec: dict[str, Any] = body["Spec"] if isinstance(body.get("Spec"), dict) else {}
    _refuse_unemulated(spec)
    labels: dict[str, Any] = spec["Labels"] if isinstance(spec.get("Labels"), dict) else {}
    init = SwarmInit(
        listen_addr=_text(body, "ListenAddr"),
        advertise_addr=_text(body, "AdvertiseAddr"),
        data_path_addr=_text(body, "DataPathAddr"),
        data_path_port=data_path_port,
        default_addr_pool=tuple(pools),
        subnet_size=subnet_size,
        force_new_cluster=bool(body.get("ForceNewCluster")),
        availability=_availability(body),
        election_tick=_int(spec, "Raft", "ElectionTick"),
        heartbeat_tick=_int(spec, "Raft", "HeartbeatTick"),
        snapshot_interval=_int(spec, "Raft", "SnapshotInterval"),
        heartbeat_period_ns=_int(spec, "Dispatcher", "HeartbeatPeriod"),
        labels={str(k): str(v) for k, v in labels.items()},
        task_history_limit=_history_limit(spec),
        node_cert_expiry_ns=_cert_expiry(spec),
    )
    node_id = await request.app[CONTROL].swarm_init(init)
    return json_response(node_id)


async def join_swarm(request: web.Request) -> web.Response:
    body = await json_body(request)
    remotes = body.get("RemoteAddrs") or []
    if not isinstance(remotes, list) or not remotes or not all(isinstance(r, str) for r in remotes):
        raise bad_request("invalid RemoteAddrs: at least one manager address is required")
    join = SwarmJoin(
        remote_addrs=tuple(remotes),
        join_token=_text(body, "JoinToken"),
        listen_addr=_text(body, "ListenAddr"),
        advertise_addr=_text(body, "AdvertiseAddr"),
        data_path_addr=_text(body, "DataPathAddr"),
        availability=_availability(body),
    )
    await request.app[CONTROL].swarm_join(join)
    return web.Response(status=200)


async def leave_swarm(request: web.Request) -> web.Response:
    await request.app[CONTROL].swarm_leave(_flag(request, "force"))
    return web.Response(status=200)
