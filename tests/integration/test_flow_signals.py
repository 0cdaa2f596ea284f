"""Stopping ``python -m bytewax.run flows.ingest`` with Ctrl-C (SIGINT) or SIGTERM.

The README's main command, on its built-in default (a simulated plant
printed to stdout; no services needed), run as real processes: a signal
ends each one at once with status 128 + signal number and one JSON warning,
no traceback and no Rust panic, and what the stdout sink printed is there in
whole lines (see ``flows.ingest.stop_on_signals``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
"""How every line of the stdout sink starts (its event time)."""
RETRY = re.compile(r"^worker \d+:\terror connecting to worker \d+: .*; retrying$")
"""Bytewax's networking prints this on stdout while the other process is not up yet."""


def start_flows(tmp_path: Path, processes: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """The default job as ``processes`` processes, stdout to a file each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFORGE_")}
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    started = []
    for i in range(processes):
        args = ["-i", str(i), "-a", addresses] if processes > 1 else []
        out = tmp_path / f"out-{i}.txt"
        with out.open("wb") as stdout:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", "flows.ingest", *args],
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=env,
            )
        started.append((proc, out))
    return started


def wait_for_output(started: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Until every process printed readings (the flow is running), at most 60 s."""
    deadline = time.monotonic() + 60.0
    while not all(out.stat().st_size > 0 for _, out in started):
        for proc, _ in started:
            assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "no output from the flow within 60 s"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("signum", "processes"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2)],
    ids=["sigint-1-process", "sigterm-1-process", "sigint-2-processes"],
)
def test_a_signal_stops_the_flow_with_one_log_line(
    tmp_path: Path, signum: signal.Signals, processes: int
) -> None:
    started = start_flows(tmp_path, processes)
    try:
        wait_for_output(started)
        for proc, _ in started:
            proc.send_signal(signum)
        results = [(proc.communicate(timeout=20)[1].decode(), out) for proc, out in started]
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for (proc, _), (stderr, out) in zip(started, results, strict=True):
        assert proc.returncode == 128 + signum, stderr[-2000:]
        assert "Traceback" not in stderr and "panicked" not in stderr, stderr[-2000:]
        last = json.loads(stderr.strip().splitlines()[-1])
        assert last["msg"].startswith("stopping on a signal")
        assert (last["level"], last["step"], last["signal"], last["exit_status"]) == (
            "warning",
            "stop",
            signum.name,
            128 + signum,
        )
        printed = out.read_text()
        assert printed.endswith("\n"), "the stdout sink's last line was cut off"
        lines = [line for line in printed.splitlines() if not RETRY.match(line)]
        assert lines and all(LINE.match(line) for line in lines), lines[-3:]
