"""Pieces shared by the benchmarks: one process per configuration, its peak RSS, busy warning.

Each benchmark re-invokes itself with ``--only NAME`` for one configuration; the child prints
its figures as a JSON object on its last stdout line, so ``ru_maxrss`` measures that
configuration alone. Configurations run one after another, never at once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local torchrun rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_configs(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """Names from a comma-separated ``--configs`` value; an unknown name is a usage error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown configs: {', '.join(unknown)}")
    return names


def warn_if_busy(threshold: float = 0.5) -> float:
    """Say on stderr when other processes load the machine (every figure would be lower);
    returns the 1-minute load average, for the record."""
    load = os.getloadavg()[0]
    if load > threshold:
        print(f"warning: load average {load:.2f} before starting: other processes share the "
              f"{os.cpu_count()} cores and will lower every figure", file=sys.stderr)
    return load


def run_child(command: list[str], name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one configuration's process and return the JSON object of its last stdout line."""
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True,
                          env=env if env is not None else os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
