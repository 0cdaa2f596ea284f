"""``/metrics`` and ``/health`` over HTTP for a flow process, one port per process.

>>> server = MetricsServer(port=0).start()       # 0: any free port (tests)
>>> import urllib.request, json
>>> url = f"http://127.0.0.1:{server.port}"
>>> json.load(urllib.request.urlopen(url + "/health"))["status"]
'ok'
>>> b"# TYPE" in urllib.request.urlopen(url + "/metrics").read()
True
>>> server.stop()

Which port: Prometheus scrapes each process of a flow on its own port,
``STREAMFORGE_METRICS_PORT`` (default 9400) plus the process id that
``python -m bytewax.run ... -i N -a ...`` gives it (``BYTEWAX_PROCESS_ID``
works too); a single process is id 0. The workers of one process (``-w``)
share its port: they share its registry. So ``-i 0`` and ``-i 1`` of a
two-process flow serve 9400 and 9401, and a second flow on the same machine
takes another base (say 9410). ``STREAMFORGE_METRICS_PORT=off`` serves
nothing; ``STREAMFORGE_METRICS_HOST`` (default 127.0.0.1) is the address to
listen on (``0.0.0.0`` in a container).

>>> process_id(["flows.ingest", "-i", "1", "-a", "a:1;b:2"], {})
1
>>> process_id(["flows.ingest"], {"BYTEWAX_PROCESS_ID": "2"})
2
>>> port_for_process({"STREAMFORGE_METRICS_PORT": "9410"}, 1)
9411
>>> port_for_process({"STREAMFORGE_METRICS_PORT": "off"}, 1) is None
True

A port that is taken is logged and the flow runs on without metrics: the
data matters more than its dashboard.

Bytewax's own metrics: its Rust core times every step (``bytewax_*``:
``flat_map_batch`` / ``stateful_batch_on_batch`` / ``out_part_write_batch``
duration histograms per ``step_id``, input batch sizes, items in and out,
``snapshot_duration_seconds``) and serves them, with prometheus_client's
registry, from its Dataflow API server. When that server's port (ours plus
1000: 10400 for 9400) is free, it is switched on (``BYTEWAX_DATAFLOW_API_*``,
read when ``bytewax.run`` starts the dataflow, just after it imported the
flow) and our ``/metrics`` answers its text, which holds both; otherwise, or
with ``STREAMFORGE_METRICS_BYTEWAX=off``, our own registry alone. Bytewax's
server listens on every interface: keep that port behind the firewall.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, MutableMapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import render

log = get_logger("connectors.runtime.metrics_server")

DEFAULT_PORT = 9400
BYTEWAX_PORT_OFFSET = 1000
_STARTED = time.monotonic()


def process_id(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """This flow process's id among its peers, as ``bytewax.run`` reads it (0 alone)."""
    for i, arg in enumerate(argv):
        if arg in ("-i", "--process-id") and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--process-id="):
            return int(arg.split("=", 1)[1])
    if env.get("BYTEWAX_PROCESS_ID", "").isdigit():
        return int(env["BYTEWAX_PROCESS_ID"])
    pod, statefulset = env.get("BYTEWAX_POD_NAME"), env.get("BYTEWAX_STATEFULSET_NAME")
    if pod and statefulset and pod.startswith(statefulset + "-"):
        return int(pod.removeprefix(statefulset + "-"))
    return 0


def port_for_process(env: Mapping[str, str], pid: int) -> int | None:
    """Base port plus process id; None when metrics are switched off."""
    base = env.get("STREAMFORGE_METRICS_PORT", str(DEFAULT_PORT)).strip().lower()
    if base in ("", "off", "none", "false", "no"):
        return None
    return int(base) + pid if int(base) else 0


def _bytewax_metrics(port: int | None) -> bytes | None:
    """Bytewax's /metrics text (with our registry in it), or None if it does not answer."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return bytes(r.read())
    except OSError:
        return None


def enable_bytewax_metrics(port: int, env: MutableMapping[str, str]) -> int | None:
    """Switch Bytewax's Dataflow API server on at ``port`` if it is free; the port or None."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))  # where Bytewax will bind it
        except OSError:
            return None
    env["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
    env["BYTEWAX_DATAFLOW_API_PORT"] = str(port)
    # The server writes the dataflow's graph to dataflow.json in this folder
    # (by default the working directory): keep it out of there. It must exist.
    graph_dir = Path(tempfile.gettempdir()) / f"streamforge-bytewax-{port}"
    graph_dir.mkdir(exist_ok=True)
    env.setdefault("BYTEWAX_DATAFLOW_API_CACHE_PATH", str(graph_dir))
    return port


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            text = _bytewax_metrics(self.server.bytewax_port) or render().encode()
            self._send(200, CONTENT_TYPE_LATEST, text)
        elif path in ("/health", "/healthz"):
            body = json.dumps(self.server.health()).encode()
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain", b"not found: try /metrics or /health\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape is noise; errors surface in Prometheus


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    info: dict[str, Any]
    bytewax_port: int | None = None

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - _STARTED, 1),
            **self.info,
        }


class MetricsServer:
    """A daemon thread answering ``/metrics`` and ``/health`` (``/healthz``)."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", bytewax_port: int | None = None, **info: Any
    ) -> None:
        self.host = host
        self.requested_port = port
        self.bytewax_port = bytewax_port
        self.info = {"pid": os.getpid(), **info}
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked for)."""
        return self._server.server_address[1] if self._server else self.requested_port

    def start(self) -> MetricsServer:
        """Listen and serve in a daemon thread (raises OSError if the port is taken)."""
        server = _Server((self.host, self.requested_port), _Handler)
        server.info = self.info
        server.bytewax_port = self.bytewax_port
        self._server = server
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def serve_metrics_from_environment(
    argv: Sequence[str] | None = None, env: MutableMapping[str, str] | None = None
) -> MetricsServer | None:
    """Start this flow process's metrics server as the environment says (see above)."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    pid = process_id(argv, env)
    port = port_for_process(env, pid)
    if port is None:
        return None
    host = env.get("STREAMFORGE_METRICS_HOST", "127.0.0.1")
    bytewax_port = None
    if port and env.get("STREAMFORGE_METRICS_BYTEWAX", "on").lower() not in ("off", "false", "no"):
        bytewax_port = enable_bytewax_metrics(port + BYTEWAX_PORT_OFFSET, env)
    server = MetricsServer(port, host, bytewax_port, process_id=pid)
    try:
        server.start()
    except OSError as exc:
        log.warning(
            "metrics not served: port unavailable",
            extra={"step": "metrics", "host": host, "port": port, "error": str(exc)},
        )
        return None
    log.info(
        "serving /metrics and /health",
        extra={
            "step": "metrics",
            "host": host,
            "port": server.port,
            "process_id": pid,
            "bytewax_port": bytewax_port,
        },
    )
    return server
