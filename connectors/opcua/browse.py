"""List the variables under a node, to write the ``nodes:`` of an OPC UA endpoint config.

    python -m connectors.opcua browse opc.tcp://127.0.0.1:4840
    python -m connectors.opcua browse opc.tcp://plc:4840 --node "ns=2;s=Line1" --yaml

Prints one line per variable: NodeId, browse path (from the Objects folder,
in the syntax ``browse_path`` accepts) and data type::

    ns=2;s=Line1.Temperature    2:Plant/2:Line1/2:Temperature    Double

Standard nodes (namespace 0, e.g. the Server object) and properties
(HasProperty references such as EURange) are skipped: they are rarely what
one wants to record. The walk follows hierarchical references, at most
``max_depth`` levels and ``limit`` variables. With ``--yaml`` the result is
a ``nodes:`` fragment to paste into the config:

>>> found = [BrowsedVariable("ns=2;s=Line1.Temperature", "2:Plant/2:Line1/2:Temperature",
...                          "Double", "Line1", "Temperature")]
>>> print(format_yaml(found))
nodes:
  - browse_path: '2:Plant/2:Line1/2:Temperature'   # ns=2;s=Line1.Temperature, Double
    device: 'Line1'
    metric: 'Temperature'
>>> path_element(ua.QualifiedName("Line/1", 2))     # reserved characters are escaped
'2:Line&/1'
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import Client, ua

_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)
_RESERVED = "/.<>:#!&"  # characters escaped with '&' in a RelativePath (OPC UA Part 4, A.2)


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    """One variable found by :func:`browse_variables`."""

    node_id: str
    browse_path: str | None  # None when the start node is not under the Objects folder
    data_type: str
    parent: str  # browse name of the object or variable that holds it (a device name guess)
    name: str


def path_element(name: ua.QualifiedName) -> str:
    """``ns:Name`` with reserved characters escaped, as a browse path element."""
    escaped = "".join(f"&{ch}" if ch in _RESERVED else ch for ch in name.Name)
    return f"{name.NamespaceIndex}:{escaped}"


async def _start_path(client: Client, start: ua.NodeId) -> list[str] | None:
    """Path elements from Objects to ``start``, or None if ``start`` is not under Objects."""
    if start == _OBJECTS:
        return []
    nodes = await client.get_node(start).get_path()
    ids = [n.nodeid for n in nodes]
    if _OBJECTS not in ids:
        return None
    after = nodes[ids.index(_OBJECTS) + 1 :]
    return [path_element(await n.read_browse_name()) for n in after]


async def _children(
    client: Client, node_ids: list[ua.NodeId]
) -> list[list[ua.ReferenceDescription]]:
    """Forward hierarchical references of Objects and Variables, for many nodes in one request."""
    params = ua.BrowseParameters()
    params.View = ua.ViewDescription()
    params.RequestedMaxReferencesPerNode = 0
    for node_id in node_ids:
        desc = ua.BrowseDescription()
        desc.NodeId = node_id
        desc.BrowseDirection = ua.BrowseDirection.Forward
        desc.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        desc.IncludeSubtypes = True
        desc.NodeClassMask = ua.NodeClass.Object | ua.NodeClass.Variable
        desc.ResultMask = ua.BrowseResultMask.All
        params.NodesToBrowse.append(desc)
    results = await client.uaclient.browse(params)
    out: list[list[ua.ReferenceDescription]] = []
    for result in results:
        refs = list(result.References or [])
        point = result.ContinuationPoint
        while point:
            more = await client.uaclient.browse_next(
                ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[point])
            )
            refs += more[0].References or []
            point = more[0].ContinuationPoint
        out.append(refs)
    return out


async def _type_names(client: Client, type_ids: list[ua.NodeId]) -> dict[ua.NodeId, str]:
    names: dict[ua.NodeId, str] = {}
    custom = []
    for type_id in set(type_ids):
        if type_id.NamespaceIndex == 0 and type_id.Identifier in ua.ObjectIdNames:
            names[type_id] = ua.ObjectIdNames[type_id.Identifier]
        else:
            custom.append(type_id)
    if custom:
        values = await client.read_attributes(
            [client.get_node(t) for t in custom], ua.AttributeIds.BrowseName
        )
        for type_id, dv in zip(custom, values, strict=True):
            names[type_id] = (
                dv.Value.Value.Name if dv.Value and dv.Value.Value else type_id.to_string()
            )
    return names


async def browse_variables(
    client: Client, start: ua.NodeId | None = None, max_depth: int = 10, limit: int = 100_000
) -> list[BrowsedVariable]:
    """The variables under ``start`` (default: the Objects folder) on a connected client."""
    root = start or _OBJECTS
    root_path = await _start_path(client, root)
    root_name = (await client.get_node(root).read_browse_name()).Name
    frontier: list[tuple[ua.NodeId, list[str] | None, str]] = [(root, root_path, root_name)]
    seen = {root}
    found: list[tuple[ua.NodeId, list[str] | None, str, str]] = []
    for _depth in range(max_depth):
        if not frontier or len(found) >= limit:
            break
        children = []
        for start_at in range(0, len(frontier), 500):
            batch = frontier[start_at : start_at + 500]
            children += await _children(client, [node_id for node_id, _, _ in batch])
        next_frontier = []
        for (_, path, parent_name), refs in zip(frontier, children, strict=True):
            for ref in refs:
                node_id = ua.NodeId(
                    ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType
                )
                if node_id in seen or node_id.NamespaceIndex == 0:
                    continue
                if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                    continue
                seen.add(node_id)
                child_path = None if path is None else [*path, path_element(ref.BrowseName)]
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append((node_id, child_path, parent_name, ref.BrowseName.Name))
                next_frontier.append((node_id, child_path, ref.BrowseName.Name))
        frontier = next_frontier
    found = found[:limit]
    type_values = []
    for start_at in range(0, len(found), 1000):
        nodes = [client.get_node(f[0]) for f in found[start_at : start_at + 1000]]
        type_values += await client.read_attributes(nodes, ua.AttributeIds.DataType)
    type_ids = [
        dv.Value.Value if dv.Value and dv.Value.Value is not None else ua.NodeId()
        for dv in type_values
    ]
    names = await _type_names(client, type_ids)
    return [
        BrowsedVariable(
            node_id.to_string(),
            "/".join(path) if path is not None else None,
            names.get(type_id, "?"),
            parent,
            name,
        )
        for (node_id, path, parent, name), type_id in zip(found, type_ids, strict=True)
    ]


def format_table(variables: list[BrowsedVariable]) -> str:
    """Tab-separated NodeId, browse path, data type, one variable a line, with a header."""
    lines = ["node_id\tbrowse_path\tdata_type"]
    lines += [f"{v.node_id}\t{v.browse_path or '-'}\t{v.data_type}" for v in variables]
    return "\n".join(lines)


def format_yaml(variables: list[BrowsedVariable]) -> str:
    """A ``nodes:`` config fragment (device = the parent's name, metric = the variable's)."""
    lines = ["nodes:"]
    for v in variables:
        if v.browse_path is not None:
            lines.append(f"  - browse_path: {v.browse_path!r}   # {v.node_id}, {v.data_type}")
        else:
            lines.append(f"  - node_id: {v.node_id!r}   # {v.data_type}")
        lines.append(f"    device: {v.parent!r}")
        lines.append(f"    metric: {v.name!r}")
    return "\n".join(lines)
