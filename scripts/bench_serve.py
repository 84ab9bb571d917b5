"""Benchmark: ``nmt serve`` under load on loopback, against ``nmt translate`` on one file.

What it measures, with a trained model directory or ONNX export (``--model``) and the
LibreOffice help test set (``--src``, first ``--limit`` lines), every request one sentence, beam
size 5:

- ``translate-file``: ``Translator.translate`` on all the lines at once (what ``nmt translate -i
  FILE`` runs after loading the model), in a child process, before the servers and again after
  them: sentences/s of each and their mean (the rate the targets compare with, so that a host
  whose speed drifts during the run weighs on both sides alike), and the translations;
- ``serve-batched``: ``nmt serve`` (``--max-batch-wait 5``, ``--batching`` and ``--workers-in``
  as given: by default continuous batching, torch's searches in processes, as nmt serve's
  defaults) with 1, 8, 32 and 128 concurrent clients (``--clients``): sentences/s, p50/p95/p99
  latency per request, and how many replies differ from ``nmt translate``'s line;
- ``serve-unbatched``: ``nmt serve --max-batch-wait 0`` (one request per search) with 1 and 32
  clients (``--unbatched-clients``);
- ``soak``: the batched server with 32 clients for ``--soak-seconds`` (default 600): its RSS
  after a warm-up minute and at the end.

Targets (issues 16 and 28): with 32 clients the batched server gives at least 4x the unbatched
one's sentences/s, within 1.5x of ``translate-file``'s, with p99 latency under 2 s; with 128
clients p99 under 4 s; every reply equals ``nmt translate``'s line; RSS at the end of the soak
within 10% of RSS after warm-up.

The server listens on 127.0.0.1 on a free port, runs in its own process (torch's default
threads), and the clients (threads of this process, one keep-alive HTTP connection each) share
the machine with it. Each setting is bounded by the number of sentences and ``--max-seconds``.

    python scripts/bench_serve.py --model runs/lohelp_en_de [--src FILE] [--limit 600]
        [--clients 1,8,32,128] [--unbatched-clients 1,32] [--soak-seconds 600] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import warn_if_busy  # noqa: E402

BEAM = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def translate_file(model: str, lines: list[str],
                   precision: str = "auto") -> tuple[dict, list[str]]:
    """sentences/s of Translator.translate on all lines, in a child process, and its
    translations (what every reply of the server must equal)."""
    code = (
        "import json, sys, time\n"
        "from nmt.inference.translator import Translator\n"
        "lines = json.load(sys.stdin)\n"
        f"t = Translator.load({model!r}, precision={precision!r})\n"
        "t.translate(lines[:20], beam_size=5)\n"
        "start = time.perf_counter()\n"
        "out = t.translate(lines, beam_size=5)\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'out': out}))\n")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(lines), text=True,
                          capture_output=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds = result["seconds"]
    return ({"sentences": len(lines), "seconds": seconds, "sent_per_s": len(lines) / seconds},
            result["out"])


class Server:
    """``nmt serve`` in a child process on a free loopback port."""

    def __init__(self, model: str, max_wait_ms: float, precision: str = "auto",
                 batch_tokens: int | None = None, batching: str = "continuous",
                 workers: int = 0, workers_in: str = "auto") -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nmt", "serve", "-m", model, "--port", str(self.port),
             "--beam-size", str(BEAM), "--max-batch-wait", str(max_wait_ms), "-q",
             "--precision", precision,
             *(["--batch-tokens", str(batch_tokens)] if batch_tokens else []),
             "--batching", batching, "--workers", str(workers), "--workers-in", workers_in,
             "--queue-limit", "100000", "--timeout", "120"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"nmt serve did not start: {self.proc.stderr.read()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def load(port: int, lines: list[str], pair: tuple[str, str], clients: int, total: int,
         max_seconds: float, expected: list[str] | None = None) -> dict:
    """``clients`` threads send one sentence per request until ``total`` are done; each reply
    is compared with ``expected`` (``nmt translate``'s line)."""
    latencies: list[float] = []
    failures: list[str] = []
    differ: list[int] = []
    counter = iter(range(total))
    lock = threading.Lock()
    stop_at = time.perf_counter() + max_seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
        while time.perf_counter() < stop_at:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            body = json.dumps({"q": lines[index % len(lines)], "source": pair[0],
                               "target": pair[1]})
            start = time.perf_counter()
            conn.request("POST", "/translate", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
            with lock:
                if reply.status == 200:
                    latencies.append(time.perf_counter() - start)
                    text = json.loads(data)["translatedText"]
                    if expected is not None and text != expected[index % len(lines)]:
                        differ.append(index)
                else:
                    failures.append(f"{reply.status} {data[:200]!r}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "sentences": len(latencies), "seconds": elapsed,
            "sent_per_s": len(latencies) / elapsed, "p50_ms": quantiles[49] * 1000,
            "p95_ms": quantiles[94] * 1000, "p99_ms": quantiles[98] * 1000,
            "differ_from_file": len(differ) if expected is not None else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="trained model directory")
    parser.add_argument("--src", default=str(ROOT.parent / "shared/data/lohelp-en-de/test.en"))
    parser.add_argument("--limit", type=int, default=600, help="sentences per setting")
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="time bound of each setting")
    parser.add_argument("--unbatched-clients", default="1,32",
                        help="client counts for the server without batching ('' to skip)")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--batching", default="continuous", choices=("continuous", "gathered"),
                        help="nmt serve --batching of the batched server")
    parser.add_argument("--workers", type=int, default=0,
                        help="nmt serve --workers: searches at once (default 0: nmt serve's)")
    parser.add_argument("--workers-in", default="auto", choices=("auto", "processes", "threads"),
                        help="nmt serve --workers-in: where continuous searches run")
    parser.add_argument("--batch-tokens", type=int,
                        help="nmt serve --batch-tokens: source pieces searched at once "
                             "(default: the model's decoding.batch_tokens)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="of nmt serve and of the file translation (ONNX: auto or fp32)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    from nmt.config import load_config

    config = load_config(str(Path(args.model) / "config.yaml"), [])
    pair = (config.data.src_lang, config.data.tgt_lang)
    lines = [x for x in Path(args.src).read_text(encoding="utf-8").splitlines() if x.strip()]
    lines = lines[:args.limit]
    load_before = warn_if_busy()
    from nmt.pipeline.reports import hardware

    figures: dict = {"hardware": hardware(), "load_before": load_before,
                     "sentences": len(lines), "beam_size": BEAM}

    figures["precision"], figures["batching"] = args.precision, args.batching
    figures["workers"], figures["workers_in"] = args.workers, args.workers_in
    before, expected = translate_file(args.model, lines, args.precision)
    print(f"translate-file (before the servers): {before['sent_per_s']:.1f} sent/s", flush=True)

    for name, wait, counts in (("serve_batched", 5.0, args.clients),
                               ("serve_unbatched", 0.0, args.unbatched_clients)):
        if not counts:
            continue
        server = Server(args.model, wait, args.precision, args.batch_tokens, args.batching,
                        args.workers, args.workers_in)
        try:
            load(server.port, lines, pair, 8, 40, 60)  # warm-up
            rows = []
            for clients in (int(c) for c in counts.split(",")):
                row = load(server.port, lines, pair, clients, len(lines), args.max_seconds,
                           expected)
                rows.append(row)
                print(f"{name} {clients:>3} clients: {row['sent_per_s']:.1f} sent/s, p50 "
                      f"{row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, p99 "
                      f"{row['p99_ms']:.0f} ms, {row['differ_from_file']} of "
                      f"{row['sentences']} differ from nmt translate", flush=True)
            figures[name] = rows
            if name == "serve_batched" and args.soak_seconds > 0:
                load(server.port, lines, pair, 32, 10**9, min(60.0, args.soak_seconds / 10))
                warm = rss_mb(server.proc.pid)
                row = load(server.port, lines, pair, 32, 10**9, args.soak_seconds)
                end = rss_mb(server.proc.pid)
                figures["soak"] = {"seconds": row["seconds"], "sentences": row["sentences"],
                                   "rss_warm_mb": warm, "rss_end_mb": end,
                                   "growth": end / warm - 1, "p99_ms": row["p99_ms"]}
                print(f"soak {row['seconds']:.0f} s, {row['sentences']} sentences: RSS "
                      f"{warm:.0f} -> {end:.0f} MB ({(end / warm - 1):+.1%})", flush=True)
        finally:
            server.stop()

    after, again = translate_file(args.model, lines, args.precision)
    rates = (before["sent_per_s"], after["sent_per_s"])
    figures["translate_file"] = {"sentences": len(lines), "sent_per_s": statistics.mean(rates),
                                 "before": before, "after": after,
                                 "lines_changed": sum(a != b for a, b in zip(expected, again,
                                                                             strict=True))}
    print(f"translate-file (after the servers): {after['sent_per_s']:.1f} sent/s; mean "
          f"{figures['translate_file']['sent_per_s']:.1f}", flush=True)
    at = {(name, r["clients"]): r for name in ("serve_batched", "serve_unbatched")
          for r in figures.get(name, [])}
    targets = {}
    if ("serve_batched", 32) in at:
        targets["file_over_batched_32"] = (figures["translate_file"]["sent_per_s"]
                                           / at["serve_batched", 32]["sent_per_s"])
        targets["file_before_over_batched_32"] = (before["sent_per_s"]  # the file once, first
                                                  / at["serve_batched", 32]["sent_per_s"])
        targets["p99_ms_32"] = at["serve_batched", 32]["p99_ms"]
        if ("serve_unbatched", 32) in at:
            targets["batched_over_unbatched_32"] = (at["serve_batched", 32]["sent_per_s"]
                                                    / at["serve_unbatched", 32]["sent_per_s"])
    if ("serve_batched", 128) in at:
        targets["p99_ms_128"] = at["serve_batched", 128]["p99_ms"]
    figures["targets"] = targets
    print(json.dumps(figures["targets"]))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
