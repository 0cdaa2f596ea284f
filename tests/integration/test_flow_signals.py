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
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ports import free_port

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
"""How every line of the stdout sink starts (its event time)."""
RETRY = re.compile(r"^worker \d+:\terror connecting to worker \d+: .*; retrying$")
"""Bytewax's networking prints this on stdout while the other process is not up yet."""


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_flows(
    tmp_path: Path, processes: int, sigint: Callable[[], None] = default_sigint
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """The default job as ``processes`` processes, stdout to a file each.

    ``sigint`` sets the SIGINT disposition they start with.
    """
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
                # As from a terminal: a test run started in the background
                # (CI) has SIGINT ignored, the children would inherit that,
                # and the flow leaves an ignored SIGINT ignored.
                preexec_fn=sigint,
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


def kill_leftovers(started: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """SIGKILL whatever a failed test left running."""
    for proc, _ in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
        kill_leftovers(started)

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


def test_an_ignored_sigint_stays_ignored(tmp_path: Path) -> None:
    """Started with SIGINT ignored (``nohup``, a script's background job), Ctrl-C
    does not stop the flow; SIGTERM still does."""
    [(proc, _out)] = started = start_flows(tmp_path, 1, sigint=ignore_sigint)
    try:
        wait_for_output(started)
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=20)[1].decode()
    finally:
        kill_leftovers(started)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert json.loads(stderr.strip().splitlines()[-1])["signal"] == "SIGTERM"
