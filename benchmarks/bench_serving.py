"""Load test of the HTTP service (``transrec serve``): requests/s, latency percentiles and errors under a
fixed number of concurrent clients, for ``POST /recommend`` alone and for a mix with ``POST /items``.

The service is a real uvicorn on 127.0.0.1, started here as its own process (``python -m transrec serve``
on a copy of the export, so that the items the test adds leave the export untouched); ``--url`` points at
a service already running instead. The clients are asyncio tasks sharing one aiohttp session (at most
``--clients`` connections), each sending its next request as soon as the last one is answered, for
``--duration`` seconds per phase after ``--warmup`` seconds that are not counted:

1. ``recommend``: every request a ``POST /recommend`` (k = 10) with a history of 1..max_len catalogue ids
   drawn at random (4,096 histories prepared in advance, so that the clients spend no time building
   them);
2. ``mix``: the same, except that a request is, with probability ``--add-share`` (5%), a ``POST /items`` of
   a text item with a fresh id, followed at once by the ``POST /recommend`` that should show it: the new
   item's text is that of the top-ranked item of a history prepared beforehand, so the history ranks the
   new item next to it (the issue's "Done when" example). No such history holds an item that another add
   copies: a copy of an item of the history is not excluded as the item itself is, and would outrank it.
   ``add -> visible`` is the time from sending the add to receiving that recommendation. The top-ranked
   items are fewer than the adds, so a text is added several times, and copies of a text have equal
   vectors (up to float rounding when they are encoded in one batch with other items) that tie: a copy
   may rank behind the others. So the recommendation asks for ``--visible-k`` items plus one per other
   copy of the text added so far (by any client), and an add counts as not visible only when its item is
   not among them; the new item's rank is recorded, and adds seen only below ``--visible-k`` (behind
   copies) are counted apart.

With ``--rate R`` the load is open instead of closed: each client starts its requests at the times of a
Poisson process of rate ``R / clients`` (an add and the recommendation that checks it count as one
start), so the service is offered ``R`` starts a second whatever its latency, as a service running at a
given traffic is. A start due while the client's previous request is still unanswered waits for it; the
start lag (how long starts waited) is reported: a p99 lag near the latencies is Poisson gaps shorter than
a request, one that grows with the duration means the service cannot carry ``R``.
Latencies are then those of a service at that load rather than at saturation, where a closed loop puts
every request behind the others' (by Little's law, about clients / throughput).

An error is a response other than 200 (201 for an add) or a failed connection. The server's CPU time
(from /proc: the serving process and its encoder process) and the client's are printed too: both share
the machine's cores, and the server's CPU time per request does not depend on what other processes leave
it. Prints a table and writes every figure as JSON (``--json``).

    python benchmarks/bench_serving.py EXPORT_DIR                  # 32 clients, 20 s per phase
    python benchmarks/bench_serving.py EXPORT_DIR --clients 8 --duration 5 --json out.json
    python benchmarks/bench_serving.py EXPORT_DIR --rate 300     # 300 requests/s offered, open loop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from transrec.utils.packages import import_optional

HISTORIES = 4096
POOL_HISTORIES = 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and of its running children (the service's encoder process),
    in seconds (Linux /proc)."""
    total = 0.0
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(c) for c in children.read_text().split()]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1e3, [50, 95, 99])
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": max(latencies) * 1e3}


class Server:
    """``transrec serve`` on a copy of the export, in its own process, on a free loopback port."""

    def __init__(
        self,
        export: Path,
        index: str,
        torch_threads: int | None,
        workdir: Path,
        serve_options: tuple[str, ...] = (),
    ) -> None:
        self.copy = workdir / "export"
        shutil.copytree(export, self.copy)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        env = dict(os.environ)
        if torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(torch_threads)  # torch's intra-op threads, read at start
        command = [sys.executable, "-m", "transrec", "serve", str(self.copy), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--index", index, "--quiet", *serve_options]
        if torch_threads is not None:
            command += ["--torch-threads", str(torch_threads)]
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def log_tail(self) -> str:
        return "".join(self.log_path.read_text().splitlines(keepends=True)[-20:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def wait_until_healthy(session: Any, url: str, server: Server | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.process.poll() is not None:
            raise SystemExit(
                f"the service exited with status {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            async with session.get(f"{url}/health") as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.25)
    raise SystemExit(f"{url}/health did not answer within {timeout:.0f} s")


class Phase:
    """Latencies and errors of one phase, per kind of request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: dict[str, list[float]] = {"recommend": [], "items": [], "add_visible": []}
        self.errors: dict[str, int] = {"recommend": 0, "items": 0}
        self.not_visible = 0
        self.behind_copies = 0  # visible, but below --visible-k, behind other copies of its text
        self.ranks: list[int] = []
        self.error_examples: list[str] = []
        self.seconds = 0.0
        self.starts = 0  # requests started (an add and its check: one)
        self.lags: list[float] = []  # --rate: how long each start waited for the client's previous request

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{kind}: {message[:300]}")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": self.seconds,
            "starts": self.starts,
            "start_lag": percentiles(self.lags) if self.lags else None,
            "not_visible": self.not_visible,
            "visible_behind_copies": self.behind_copies,
            "added_item_rank": {
                "median": float(np.median(self.ranks)) if self.ranks else None,
                "max": max(self.ranks, default=None),
            },
        }
        for kind, latencies in self.latencies.items():
            row = {"requests": len(latencies), "per_second": len(latencies) / self.seconds}
            if kind in self.errors:
                row["errors"] = self.errors[kind]
            out[kind] = {**row, **percentiles(latencies)}
        total = len(self.latencies["recommend"]) + len(self.latencies["items"])
        out["requests_per_second"] = total / self.seconds
        out["error_examples"] = self.error_examples
        return out


class LoadTest:
    def __init__(
        self, aiohttp: Any, session: Any, url: str, args: argparse.Namespace, items: list[dict]
    ) -> None:
        self.aiohttp, self.session, self.url, self.args = aiohttp, session, url, args
        self.texts = {row["id"]: row["text"] for row in items}
        self.ids = [row["id"] for row in items]
        self.added = 0
        self.copies: dict[str, int] = {}  # adds sent so far per copied item
        self.pool: list[tuple[list[str], str]] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int | str, float, Any]:
        """``(status or the connection error, seconds, parsed JSON or None)``."""
        data = json.dumps(body).encode()
        start = time.perf_counter()
        try:
            async with self.session.post(
                self.url + path, data=data, headers={"content-type": "application/json"}
            ) as response:
                payload = await response.read()
                status: int | str = response.status
        except (self.aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            return f"{type(err).__name__}: {err}", time.perf_counter() - start, None
        seconds = time.perf_counter() - start
        try:
            return status, seconds, json.loads(payload)
        except ValueError:
            return status, seconds, payload.decode(errors="replace")

    def histories(self, count: int, seed: int, max_len: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [rng.sample(self.ids, rng.randint(1, min(max_len, len(self.ids)))) for _ in range(count)]

    async def build_pool(self, max_len: int, max_batch: int) -> None:
        """Histories whose top-ranked items differ, none holding another's top item: an add copies the text
        of one history's top item."""
        candidates = self.histories(POOL_HISTORIES, self.args.seed + 1, max_len)
        tops: dict[str, list[str]] = {}
        for start in range(0, len(candidates), max_batch):
            chunk = candidates[start : start + max_batch]
            status, _, body = await self.post("/recommend/batch", {"histories": chunk, "k": 1})
            if status != 200:
                raise SystemExit(f"POST /recommend/batch answered {status}: {body}")
            for history, result in zip(chunk, body["results"]):
                tops.setdefault(result["items"][0], history)
        # A copy of an item of the history is not excluded as the item is, and outranks the history's top
        # item: keep only histories that hold no item another add copies (dropping one can free others).
        while True:
            copied = set(tops)
            kept = {top: h for top, h in tops.items() if not copied.intersection(h)}
            if len(kept) == len(tops):
                break
            tops = kept
        if not tops:
            raise SystemExit(
                "no history of the pool leaves its top item uncopied by the others; see build_pool"
            )
        self.pool = [(history, top) for top, history in tops.items()]

    async def recommend(self, phase: Phase | None, body: dict[str, Any]) -> None:
        status, seconds, payload = await self.post("/recommend", body)
        if phase is None:
            return
        phase.latencies["recommend"].append(seconds)
        if status != 200:
            phase.error("recommend", f"{status} {payload}")

    async def add_and_check(self, phase: Phase, rng: random.Random) -> None:
        history, top = self.pool[rng.randrange(len(self.pool))]
        self.added += 1
        new_id = f"bench-{os.getpid()}-{self.added}"
        self.copies[top] = self.copies.get(top, 0) + 1
        start = time.perf_counter()
        status, seconds, payload = await self.post("/items", {"id": new_id, "text": self.texts[top]})
        phase.latencies["items"].append(seconds)
        if status != 201:
            phase.error("items", f"{status} {payload}")
            return
        # Every other copy of this text added so far ties with it (other clients' too, added meanwhile).
        k = min(self.args.visible_k + self.copies[top] - 1, 1000)
        status, seconds, payload = await self.post("/recommend", {"history": history, "k": k})
        phase.latencies["recommend"].append(seconds)
        if status != 200:
            phase.error("recommend", f"{status} {payload}")
            return
        phase.latencies["add_visible"].append(time.perf_counter() - start)
        if new_id not in payload["items"]:
            phase.not_visible += 1
            return
        rank = payload["items"].index(new_id) + 1
        phase.ranks.append(rank)
        if rank > self.args.visible_k:
            phase.behind_copies += 1

    async def client(
        self,
        phase: Phase | None,
        bodies: list[bytes],
        seed: int,
        add_share: float,
        until: float,
        rate: float | None = None,
    ):
        """One client: a closed loop (each request sent when the last is answered), or with ``rate``, the
        starts of a Poisson process of that rate (a start due while a request runs waits for it: its lag)."""
        rng = random.Random(seed)
        due = time.perf_counter() + (rng.expovariate(rate) if rate else 0.0)
        while due < until and time.perf_counter() < until:  # a late client stops on time too
            now = time.perf_counter()
            if now < due:
                await asyncio.sleep(due - now)
            if phase is not None:
                phase.starts += 1
                if rate is not None:
                    phase.lags.append(max(now - due, 0.0))
            due = due + rng.expovariate(rate) if rate else time.perf_counter()
            if add_share and rng.random() < add_share:
                await self.add_and_check(phase, rng)
            else:
                await self.recommend(phase, bodies[rng.randrange(len(bodies))])

    async def run_phase(
        self, name: str, bodies: list, add_share: float, seconds: float, server: Server | None
    ):
        phase = Phase(name)
        load_before = os.getloadavg()
        server_cpu = process_cpu_seconds(server.process.pid) if server else None
        client_cpu = client_cpu_seconds()
        start = time.perf_counter()
        until = start + seconds
        record = None if name == "warmup" else phase
        rate = self.args.rate / self.args.clients if self.args.rate else None
        await asyncio.gather(
            *(
                self.client(record, bodies, 1000 * c + len(name), add_share, until, rate)
                for c in range(self.args.clients)
            )
        )
        phase.seconds = time.perf_counter() - start
        result = phase.summary() if record else {}
        result["load_average_before"] = load_before
        result["load_average_after"] = os.getloadavg()
        if server:
            cpu = process_cpu_seconds(server.process.pid) - server_cpu
            result["server_cpu_cores"] = cpu / phase.seconds
            # CPU per request does not depend on how much of the machine others leave the service.
            requests = len(phase.latencies["recommend"]) + len(phase.latencies["items"])
            result["server_cpu_ms_per_request"] = 1e3 * cpu / max(requests, 1)
        result["client_cpu_cores"] = (client_cpu_seconds() - client_cpu) / phase.seconds
        return result


def print_table(results: dict[str, Any]) -> None:
    print("phase | request | count | per s | p50 ms | p95 ms | p99 ms | max ms | errors")
    for name in ("recommend", "mix"):
        phase = results[name]
        for kind in ("recommend", "items", "add_visible"):
            row = phase[kind]
            if not row["requests"]:
                continue
            errors_label = str(row.get("errors"))
            if kind == "add_visible":
                errors_label = (
                    f"{phase['not_visible']} not visible ({phase['visible_behind_copies']} seen only behind "
                    f"other copies; rank median {phase['added_item_rank']['median']}, max "
                    f"{phase['added_item_rank']['max']})"
                )
            cells = [f"{row[key]:.1f}" for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
            print(
                f"{name} | {kind.replace('_', ' -> ')} | {row['requests']} | {row['per_second']:.1f} | "
                + " | ".join(cells)
                + f" | {errors_label}"
            )
        print(
            f"{name}: {phase['requests_per_second']:.1f} requests/s in all; server CPU "
            f"{phase.get('server_cpu_cores', float('nan')):.2f} cores "
            f"({phase.get('server_cpu_ms_per_request', float('nan')):.2f} ms per request), "
            f"client {phase['client_cpu_cores']:.2f}; "
            + (
                f"{phase['starts']} starts, lag behind their Poisson times p99 "
                f"{phase['start_lag']['p99_ms']:.1f} ms; "
                if results["config"].get("rate")
                else ""
            )
            + f"load average {phase['load_average_before'][0]:.2f} -> {phase['load_average_after'][0]:.2f}"
        )
        for example in phase["error_examples"]:
            print(f"  e.g. {example}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    aiohttp = import_optional("aiohttp", "the serving load test (benchmarks/bench_serving.py)")
    items = [json.loads(line) for line in (args.export / "items.jsonl").read_text().splitlines()]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as workdir:
        serve_options = []
        if args.max_batch_size is not None:
            serve_options += ["--max-batch-size", str(args.max_batch_size)]
        if args.batch_wait_ms is not None:
            serve_options += ["--batch-wait-ms", str(args.batch_wait_ms)]
        if args.encode_in_process:
            serve_options += ["--encode-in-process"]
        serve_options += shlex.split(args.serve_args)
        server = None
        if not args.url:
            server = Server(args.export, args.index, args.torch_threads, Path(workdir), tuple(serve_options))
        url = args.url or server.url
        connector = aiohttp.TCPConnector(limit=args.clients)
        timeout = aiohttp.ClientTimeout(total=args.request_timeout)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await wait_until_healthy(session, url, server, args.start_timeout)
                async with session.get(f"{url}/metadata") as response:
                    metadata = await response.json()
                max_len = int(metadata["model"]["max_len"])
                test = LoadTest(aiohttp, session, url, args, items)
                await test.build_pool(max_len, args.max_batch)
                bodies = [{"history": h, "k": 10} for h in test.histories(HISTORIES, args.seed, max_len)]
                results: dict[str, Any] = {
                    "config": {
                        "clients": args.clients,
                        "rate": args.rate,
                        "duration_s": args.duration,
                        "warmup_s": args.warmup,
                        "add_share": args.add_share,
                        "visible_k": args.visible_k,
                        "index": args.index if server else "(the running service's)",
                        "torch_threads": args.torch_threads,
                        "serve_options": serve_options,
                        "url": url,
                        "export": str(args.export),
                        "catalogue": len(items),
                        "pool_of_distinct_top_items": len(test.pool),
                    },
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "metadata": metadata,
                }
                load = f"{args.rate:g} requests/s offered (open loop)" if args.rate else "closed loop"
                print(
                    f"{url}: {len(items)} items, max_len {max_len}, {args.clients} clients, {load}, "
                    f"{args.duration:.0f} s per phase; adds copy the text of {len(test.pool)} distinct "
                    "top-ranked items",
                    flush=True,
                )
                results["warmup"] = await test.run_phase("warmup", bodies, 0.0, args.warmup, server)
                results["recommend"] = await test.run_phase("recommend", bodies, 0.0, args.duration, server)
                results["mix"] = await test.run_phase("mix", bodies, args.add_share, args.duration, server)
        finally:
            if server:
                server.stop()
                results_log = server.log_tail()
        if server and results_log.strip():
            print(f"service log (last lines):\n{results_log}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="an export directory (transrec export --out)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="requests/s offered in all, at Poisson times (open loop; default: none, a closed loop where "
        "each client sends its next request as soon as the last is answered)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of uncounted requests first")
    parser.add_argument("--add-share", type=float, default=0.05, help="share of POST /items in the mix")
    parser.add_argument("--visible-k", type=int, default=10, help="k of the recommendation after an add")
    parser.add_argument("--index", default="exact", help="the service's retrieval index (default exact)")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="the service's --torch-threads (default: its own, 1)"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="the service's --max-batch-size (default: its own)"
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=None, help="the service's --batch-wait-ms (default: its own)"
    )
    parser.add_argument(
        "--encode-in-process",
        action="store_true",
        help="the service's --encode-in-process (default: adds encoded in a process of their own)",
    )
    parser.add_argument(
        "--serve-args", default="", help="more options for transrec serve, e.g. '--http h11 --loop asyncio'"
    )
    parser.add_argument(
        "--client-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the load generator's event loop (default auto: uvloop when installed, which leaves more CPU "
        "to the service on a small machine)",
    )
    parser.add_argument("--url", default=None, help="load an already running service instead")
    parser.add_argument("--max-batch", type=int, default=256, help="the service's --max-batch")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=Path, default=Path("bench_serving.json"), help="where to write figures"
    )
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate:g}")
    if not (args.export / "items.jsonl").is_file():
        raise SystemExit(f"{args.export} is not a transrec export (no items.jsonl); see transrec export")
    loop_factory = None
    if args.client_loop != "asyncio":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.client_loop == "uvloop":
                raise SystemExit("--client-loop uvloop: uvloop is not installed") from None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(main_async(args))
    results["config"]["client_loop"] = "uvloop" if loop_factory else "asyncio"
    print_table(results)
    args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
