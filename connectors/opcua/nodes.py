"""The configured nodes of an endpoint: parsed addresses, resolution on a server, request building.

>>> from connectors.opcua.config import OpcuaEndpointConfig
>>> endpoint_cfg = OpcuaEndpointConfig.model_validate({
...     "name": "line1", "url": "opc.tcp://127.0.0.1:4840",
...     "nodes": [{"node_id": "ns=2;s=Line1.Temperature", "device": "press-1",
...                "metric": "temperature", "unit": "degC"},
...               {"browse_path": "2:Plant/2:Line1/2:Pressure", "device": "press-1",
...                "metric": "pressure"}]})
>>> plan = NodePlan(endpoint_cfg, tenant="default")   # parses; ValueError on a bad address
>>> [(n.handle, n.target.metric, n.node_id) for n in plan.nodes]
[(1, 'temperature', None), (2, 'pressure', None)]
>>> nodes = plan.fresh()
>>> import asyncio
>>> failures = asyncio.run(plan.resolve(client, nodes))  # fills node_id  # doctest: +SKIP
>>> parse_node_id("Line1.Temperature")
Traceback (most recent call last):
    ...
ValueError: 'Line1.Temperature' is not an OPC UA node id like ns=2;i=1001 or ns=2;s=Line1.Temp

Once resolved, a node becomes a monitored item (node settings over the
endpoint's defaults; the client handle is its position in the config):

>>> nodes[0].node_id = parse_node_id("ns=2;s=Line1.Temperature")
>>> params = plan.item_request(nodes[0]).RequestedParameters
>>> params.ClientHandle, params.QueueSize
(1, 10)

Addresses are parsed once (when the source is built) and resolved on every
connection: ``nsu=`` namespace URIs against the server's namespace array,
browse paths with TranslateBrowsePathsToNodeIds from the Objects folder,
because a restarted server may number things differently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from asyncua import Client, ua

from connectors.opcua.config import OpcuaEndpointConfig, OpcuaNodeConfig
from connectors.opcua.convert import ReadingTarget, data_change_filter

CHUNK = 1000
"""Nodes per Read, TranslateBrowsePaths or CreateMonitoredItems request."""

_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)

T = TypeVar("T")
Failure = tuple["ConfiguredNode", str]
"""A node that could not be used, and the reason (usually a StatusCode name)."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class ConfiguredNode:
    """A configured node and, once resolved, its NodeId on the current server."""

    handle: int  # the monitored item's client handle: position in the config, 1-based
    config: OpcuaNodeConfig
    target: ReadingTarget
    node_id: ua.NodeId | None = None


def parse_node_id(text: str) -> Any:
    """A NodeId (``ns=2;i=5``) or ExpandedNodeId (``nsu=urn:x;s=A``); ValueError if malformed."""
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:
        raise ValueError(
            f"{text!r} is not an OPC UA node id like ns=2;i=1001 or ns=2;s=Line1.Temp"
        ) from exc


def parse_browse_path(text: str) -> ua.RelativePath:
    """A browse path from the Objects folder (``2:Plant/2:Line1/2:Temp``); ValueError if bad."""
    try:
        return ua.RelativePath.from_string(text if text.startswith("/") else "/" + text)
    except Exception as exc:
        raise ValueError(
            f"{text!r} is not a browse path like 2:Plant/2:Line1/2:Temperature"
        ) from exc


def value_of(node_id: ua.NodeId | None) -> ua.ReadValueId:
    """The Value attribute of a node, as a Read or monitoring target."""
    target = ua.ReadValueId()
    target.NodeId = node_id
    target.AttributeId = ua.AttributeIds.Value
    return target


def _plain(node_id: Any, namespace: int | None = None) -> ua.NodeId:
    index = node_id.NamespaceIndex if namespace is None else namespace
    return ua.NodeId(node_id.Identifier, index, node_id.NodeIdType)


class NodePlan:
    """An endpoint's nodes with their addresses parsed, ready to resolve on any connection."""

    def __init__(self, cfg: OpcuaEndpointConfig, tenant: str) -> None:
        self.cfg = cfg
        self.nodes = [
            ConfiguredNode(i, n, ReadingTarget(cfg.tenant or tenant, n.device, n.metric, n.unit))
            for i, n in enumerate(cfg.nodes, start=1)
        ]
        self._ids = {
            n.handle: parse_node_id(n.config.node_id)
            for n in self.nodes
            if n.config.node_id is not None
        }
        self._paths = {
            n.handle: parse_browse_path(n.config.browse_path)
            for n in self.nodes
            if n.config.browse_path is not None
        }

    def fresh(self) -> list[ConfiguredNode]:
        """Unresolved copies of every node, for a new connection."""
        return [ConfiguredNode(n.handle, n.config, n.target) for n in self.nodes]

    async def resolve(self, client: Client, nodes: list[ConfiguredNode]) -> list[Failure]:
        """Fill in ``node_id`` of each node on this server; return the failures."""
        failures: list[Failure] = []
        namespaces: list[str] | None = None
        by_path: list[ConfiguredNode] = []
        for node in nodes:
            if node.handle in self._paths:
                by_path.append(node)
                continue
            parsed = self._ids[node.handle]
            uri = getattr(parsed, "NamespaceUri", None)
            if not uri:
                node.node_id = _plain(parsed)
                continue
            if namespaces is None:
                namespaces = await client.get_namespace_array()
            if uri in namespaces:
                node.node_id = _plain(parsed, namespaces.index(uri))
            else:
                failures.append((node, f"namespace {uri} unknown to the server"))
        for chunk in chunks(by_path):
            paths = [self._paths[n.handle] for n in chunk]
            results = await client.translate_browsepaths(_OBJECTS, paths)
            for node, result in zip(chunk, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    node.node_id = _plain(result.Targets[0].TargetId)
                else:
                    failures.append((node, result.StatusCode.name))
        return failures

    def item_request(self, node: ConfiguredNode) -> ua.MonitoredItemCreateRequest:
        """The monitored item for a resolved node: node settings over endpoint defaults."""
        cfg, ncfg = self.cfg, node.config
        sampling = ncfg.sampling_interval_ms
        deadband_value = ncfg.deadband_value
        params = ua.MonitoringParameters()
        params.ClientHandle = node.handle
        params.SamplingInterval = cfg.sampling_interval_ms if sampling is None else sampling
        params.QueueSize = ncfg.queue_size or cfg.queue_size
        params.DiscardOldest = True
        flt = data_change_filter(
            ncfg.deadband_type or cfg.deadband_type,
            cfg.deadband_value if deadband_value is None else deadband_value,
        )
        if flt is not None:
            params.Filter = flt
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = value_of(node.node_id)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request
