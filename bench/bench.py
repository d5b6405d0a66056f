"""`make bench`: the gateway's hit and miss paths against the floor beneath them, in one run.

Starts its own parts through the test harness (search node, collector, model service, four
release gateways: telemetry off and 100 % traces exported, each with the default serving
threads, one per core, and with one serving thread, the shape of a replica limited to one
core), drives them with wrk, and prints and writes a table of ratios. Every ratio is taken
within one repeat, between runs made seconds apart on the same machine, so a neighbour's load
moves both sides of it; the table shows the median over repeats and the spread (min-max).
Timings never go into `make test`.

CPU per request comes from /proc/<pid>/stat (utime + stime, all threads) read before and
after each wrk run, less what the process spends idle (its rate over a few quiet seconds
before each repeat: the search node's JVM works in the background), divided by the
requests wrk completed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from harness.collector import NO_TELEMETRY_ENV, bed_config  # noqa: E402
from harness.gateway import Gateway, gateway_binary  # noqa: E402
from harness.model_service import RunningModelService, start_model_service  # noqa: E402
from harness.polling import poll_until  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.process import ManagedProcess, stop_all  # noqa: E402
from harness.provisioning import provisioned  # noqa: E402
from harness.search_node import SearchNode  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INDEX_ALIAS = "bench-predictions"
# Documents the hit path cycles through: many, so the node reads more than one cached page.
HIT_IDS = [f"cust-{n:06d}" for n in range(100_000, 101_000)]
# Fresh ids for the miss path, disjoint per run; the feature store holds cust-000000..119999.
MISS_ID_BASE = 0
MISS_IDS_PER_RUN = 8_000
COALESCED_ID = "cust-119999"
# Injected model latency while 50 requests for one id are in flight, so they all overlap.
COALESCING_MODEL_LATENCY_MS = 300
OPEN_CONNECTIONS = 1_000
# Requests in flight while the connections open: few (mostly idle clients), then many (a
# burst: the store pool grows to match, and the allocator keeps the peak's memory).
HOLD_WAVES = (25, 250)
# The serving-thread settings measured, by the suffix of their gateways' names and rows: the
# default (one thread per core), and one thread (a replica limited to one core, as
# deploy/k8s/gateway.yaml runs it).
SHAPES = {"": {}, "-one-thread": {"GATEWAY__SERVER__WORKER_THREADS": "1"}}
WRK_THREADS = 2


@dataclass
class Run:
    """One wrk run and the CPU the measured processes spent during it."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_ms: dict[str, float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def cpu_per_request_ms(self, process: str) -> float:
        return self.cpu_ms[process] / max(self.requests, 1)


def cpu_ms(pid: int) -> float:
    """User plus system CPU of a process and all its threads so far, in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from the state field (3) after the command.
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def idle_cpu_rates(watched: dict[str, int], seconds: float = 3.0) -> dict[str, float]:
    """CPU milliseconds per second that each watched process spends with no requests."""
    before = {name: cpu_ms(pid) for name, pid in watched.items()}
    time.sleep(seconds)
    return {name: (cpu_ms(pid) - before[name]) / seconds for name, pid in watched.items()}


def wrk(
    url: str,
    lines: list[str],
    connections: int,
    seconds: int,
    work_dir: Path,
    watched: dict[str, int],
    idle_rates: dict[str, float],
) -> Run:
    """Runs wrk against `url` with the request `lines` (see requests.lua); CPU of the `watched`
    pids above their `idle_rates` (ms per second)."""
    request_file = work_dir / "requests.txt"
    request_file.write_text("\n".join(lines) + "\n")
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(REPO_ROOT / "bench" / "requests.lua"),
        url,
        "--",
        str(request_file),
        str(WRK_THREADS),
    ]
    before = {name: cpu_ms(pid) for name, pid in watched.items()}
    finished = subprocess.run(argv, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr}{finished.stdout}")
    output = finished.stdout
    after = {name: cpu_ms(pid) for name, pid in watched.items()}
    summary = json.loads(output.strip().splitlines()[-1])
    return Run(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        errors=summary["socket_errors"] + summary["non_2xx"],
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        cpu_ms={
            name: after[name] - before[name] - idle_rates.get(name, 0.0) * summary["duration_us"] / 1e6
            for name in watched
        },
    )


def predict_line(data_id: str) -> str:
    return f'POST /v1/predict {{"data_id":"{data_id}"}}'


def model_line(data_id: str) -> str:
    return f'POST /predict {{"data_id":"{data_id}"}}'


def start_collector(binary: Path, work_dir: Path) -> tuple[ManagedProcess, str]:
    """The bed's collector, receiving OTLP and discarding it after a one-line summary per batch:
    the bed's file exporter would write about a gigabyte of JSON in this benchmark."""
    grpc_port, http_port, health_port = free_port(), free_port(), free_port()
    config = bed_config(grpc_port, http_port, health_port, work_dir)
    config["exporters"] = {"debug": {"verbosity": "basic"}}
    for pipeline in config["service"]["pipelines"].values():
        pipeline["exporters"] = ["debug"]
    config_path = work_dir / "collector-config.yaml"
    config_path.write_text(json.dumps(config, indent=2))
    process = ManagedProcess("collector", [binary, "--config", config_path], log_dir=work_dir / "logs").start()
    process.wait_until_ready(
        lambda: requests.get(f"http://127.0.0.1:{health_port}/", timeout=2).status_code == 200,
        "collector health check to answer 200",
        timeout=60,
    )
    return process, f"http://127.0.0.1:{grpc_port}"


def start_gateway(binary: Path, work_dir: Path, name: str, env: dict[str, str]) -> Gateway:
    """A release gateway through the harness, returned once ready (store and model up)."""
    gateway = Gateway.start(work_dir, env["GATEWAY__MODEL__URL"], binary=binary, extra_env=env, name=name)
    poll_until(gateway.ready, f"{name} to be ready", timeout=120)
    return gateway


def warm_hit_set(gateway: Gateway, node_url: str) -> list[str]:
    """Stores the hit set's predictions through the gateway; the direct GET paths of their documents."""
    response = requests.post(f"{gateway.url}/v1/predict/batch", json={"data_ids": HIT_IDS}, timeout=120)
    response.raise_for_status()
    run_id = gateway.predict(HIT_IDS[0]).json()["model"]["run_id"]

    def stored_ids() -> list[str] | None:
        # The node says which documents hold them, so the gateway's document id rule is
        # not written a second time here.
        requests.post(f"{node_url}/{INDEX_ALIAS}/_refresh", timeout=30).raise_for_status()
        query = {"bool": {"filter": [{"terms": {"data_id": HIT_IDS}}, {"term": {"model.run_id": run_id}}]}}
        answer = requests.post(
            f"{node_url}/{INDEX_ALIAS}/_search",
            json={"query": query, "size": len(HIT_IDS), "_source": False},
            timeout=30,
        ).json()
        hits = answer["hits"]["hits"]
        return [hit["_id"] for hit in hits] if len(hits) == len(HIT_IDS) else None

    ids = poll_until(stored_ids, "the hit set's documents to be in the store", timeout=60)
    hit = gateway.predict(HIT_IDS[-1]).json()
    if hit.get("cache") != "hit":
        raise RuntimeError(f"a stored id was not served from the store: {hit}")
    return [f"GET /{INDEX_ALIAS}/_doc/{doc_id}" for doc_id in ids]


async def hold_connections(url: str, pid: int, count: int, wave: int) -> float:
    """Opens `count` keep-alive connections, sends one hit on each (in waves of `wave`, within
    the gateway's in-flight limit), and returns the gateway's RSS in MB while all are open."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"data_id": HIT_IDS[0]}).encode()
    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections = []

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"held connection answered {head[:40]!r}")
        connections.append(writer)

    try:
        for start in range(0, count, wave):
            await asyncio.gather(*(one() for _ in range(min(wave, count - start))))
        return rss_mb(pid)
    finally:
        for writer in connections:
            writer.close()


def model_calls_for_concurrent_misses(gateway: Gateway, model: RunningModelService, clients: int) -> tuple[int, int]:
    """(model calls, 200 answers) for `clients` simultaneous requests for one uncached id."""
    model.set_faults(latency_ms=COALESCING_MODEL_LATENCY_MS)
    barrier = threading.Barrier(clients)

    def ask() -> int:
        with requests.Session() as session:
            # Connect first, so the barrier releases requests and not TCP handshakes.
            session.get(f"{gateway.url}/healthz", timeout=10)
            barrier.wait(timeout=30)
            return session.post(f"{gateway.url}/v1/predict", json={"data_id": COALESCED_ID}, timeout=30).status_code

    try:
        before = model.stats()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(lambda _: ask(), range(clients)))
        after = model.stats()
    finally:
        model.set_faults()
    calls = after["predict_requests"] + after["batch_requests"] - before["predict_requests"] - before["batch_requests"]
    return calls, statuses.count(200)


def median_spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def machine() -> str:
    model_name = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} x {model_name}, {memory_kb / 1e6:.1f} GB RAM, Linux {platform.release()}"


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def gateway_env(model_url: str, store_url: str) -> dict[str, str]:
    """The settings every measured gateway runs with: the bed's model service and node, the
    bench's alias, info logs."""
    return {
        "GATEWAY__MODEL__URL": model_url,
        "GATEWAY__STORE__URL": store_url,
        "GATEWAY__STORE__INDEX_ALIAS": INDEX_ALIAS,
        "RUST_LOG": "info",
    }


def kept_sections(results: Path) -> str:
    """The sections a person wrote below the generated table (from the first `## ` heading
    on), so a new run replaces the figures and keeps the analysis."""
    if not results.exists():
        return ""
    text = results.read_text()
    start = text.find("\n## ")
    return "" if start < 0 else text[start:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=6, help="length of one wrk run (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every comparison (default 3)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    parser.add_argument(
        "--gateway", type=Path, help="a gateway executable to measure instead of the release build (a before/after)"
    )
    args = parser.parse_args()

    started = datetime.datetime.now(datetime.UTC)
    load_before = load_average()
    work_dir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    venv_bin = Path(sys.executable).parent
    print(f"bench: parts log to {work_dir}/logs", file=sys.stderr)
    binary = args.gateway or gateway_binary(release=True)
    try:
        node = SearchNode.start(provisioned("provision-search-node.sh"), work_dir)
        collector, collector_endpoint = start_collector(provisioned("provision-collector.sh"), work_dir)
        model = start_model_service(venv_bin, work_dir)
        common = gateway_env(model.url, node.url)
        gateways = {
            f"gateway-{telemetry}{shape}": start_gateway(
                binary, work_dir, f"gateway-{telemetry}{shape}", {**common, **telemetry_env, **shape_env}
            )
            for telemetry, telemetry_env in (("off", NO_TELEMETRY_ENV), ("traced", exported_env(collector_endpoint)))
            for shape, shape_env in SHAPES.items()
        }
        off = gateways["gateway-off"]
        print("bench: storing the hit set", file=sys.stderr)
        direct_lines = warm_hit_set(off, node.url)
        hit_lines = [predict_line(data_id) for data_id in HIT_IDS]
        pids = {name: gateway.process.pid for name, gateway in gateways.items()} | {
            "node": node.process.pid,
            "collector": collector.pid,
        }

        idle_rates: dict[str, float] = {}

        def run(url: str, lines: list[str], connections: int, seconds: int = args.seconds) -> Run:
            return wrk(url, lines, connections, seconds, work_dir, pids, idle_rates)

        # Unmeasured: JIT, connection pools and page cache warm on every path first.
        run(node.url, direct_lines, 64, 2)
        for gateway in gateways.values():
            run(gateway.url, hit_lines, 64, 2)

        rows: list[dict[str, Run]] = []
        next_miss = MISS_ID_BASE
        for repeat in range(args.repeats):
            print(f"bench: repeat {repeat + 1} of {args.repeats} (load {load_average()})", file=sys.stderr)
            idle_rates.update(idle_cpu_rates(pids))
            row = {"direct64": run(node.url, direct_lines, 64)}
            for shape in SHAPES:
                row[f"off{shape}64"] = run(gateways[f"gateway-off{shape}"].url, hit_lines, 64)
                row[f"traced{shape}64"] = run(gateways[f"gateway-traced{shape}"].url, hit_lines, 64)
            row["direct16"] = run(node.url, direct_lines, 16)
            for shape in SHAPES:
                row[f"off{shape}16"] = run(gateways[f"gateway-off{shape}"].url, hit_lines, 16)
            model_ids = [f"cust-{n:06d}" for n in range(next_miss, next_miss + MISS_IDS_PER_RUN)]
            gateway_ids = [
                f"cust-{n:06d}" for n in range(next_miss + MISS_IDS_PER_RUN, next_miss + 2 * MISS_IDS_PER_RUN)
            ]
            next_miss += 2 * MISS_IDS_PER_RUN
            row["model16"] = run(model.url, [model_line(i) for i in model_ids], 16)
            row["miss16"] = run(off.url, [predict_line(i) for i in gateway_ids], 16)
            if row["miss16"].requests > MISS_IDS_PER_RUN:
                print("bench: the miss run ran out of fresh ids; raise MISS_IDS_PER_RUN", file=sys.stderr)
            rows.append(row)

        print("bench: memory and coalescing", file=sys.stderr)
        rss_idle = {name: rss_mb(pids[name]) for name in gateways}
        rss_open = {
            (name, wave): asyncio.run(hold_connections(gateway.url, pids[name], OPEN_CONNECTIONS, wave))
            for name, gateway in gateways.items()
            for wave in HOLD_WAVES
        }
        model_calls, answered = model_calls_for_concurrent_misses(off, model, 50)
    finally:
        stop_all()

    command = "make bench" + (f" BENCH_ARGS={shlex.quote(' '.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    report = render(
        args, rows, rss_idle, rss_open, model_calls, answered, started, load_before, load_average(), command
    )
    print(report)
    args.output.write_text(report + kept_sections(args.output))
    print(f"bench: written to {args.output}", file=sys.stderr)
    return 0


def exported_env(endpoint: str) -> dict[str, str]:
    """Every signal exported over OTLP/gRPC to `endpoint` with the SDK's default batching and
    intervals, as deployed (the harness's `otel_env` shortens them for tests)."""
    return {
        "OTEL_SERVICE_NAME": "inference-gateway",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }


def render(args, rows, rss_idle, rss_open, model_calls, answered, started, load_before, load_after, command) -> str:
    def col(key: str, attribute: str) -> list[float]:
        return [getattr(row[key], attribute) for row in rows]

    def per_request(key: str, process: str) -> list[float]:
        return [row[key].cpu_per_request_ms(process) for row in rows]

    def ratio(a: list[float], b: list[float]) -> list[float]:
        return [x / y for x, y in zip(a, b, strict=True)]

    def diff(a: list[float], b: list[float]) -> list[float]:
        return [x - y for x, y in zip(a, b, strict=True)]

    t = {key: col(key, "throughput") for key in rows[0]}
    p50 = {key: col(key, "p50_ms") for key in rows[0]}
    p99 = {key: col(key, "p99_ms") for key in rows[0]}
    errors = sum(run.errors for row in rows for run in row.values())

    def latencies(key: str) -> str:
        return f"{median_spread(p50[key], 2)} / {median_spread(p99[key], 2)}"

    def hit_lines(shape: str, label: str) -> list[tuple[str, str, str]]:
        off64, traced64, off16 = f"off{shape}64", f"traced{shape}64", f"off{shape}16"
        return [
            (f"*{label}*", "", ""),
            ("Hit path, 64 connections: gateway (telemetry off), requests/s", median_spread(t[off64], 0), ""),
            (
                "**Hit throughput, gateway / direct GET** (64 conn.)",
                median_spread(ratio(t[off64], t["direct64"]), 2),
                ">= 0.5",
            ),
            ("Hit p50 / p99, gateway (64 conn.), ms", latencies(off64), ""),
            ("Hit p50 / p99, gateway (16 conn.), ms", latencies(off16), ""),
            (
                "**Hit p99 added by the gateway** (16 conn.), ms",
                median_spread(diff(p99[off16], p99["direct16"]), 2),
                "<= 2",
            ),
            (
                "**Gateway CPU per hit, telemetry off**, ms",
                median_spread(per_request(off64, f"gateway-off{shape}"), 3),
                "<= 0.08",
            ),
            (
                "**Gateway CPU per hit, 100 % traces exported**, ms",
                median_spread(per_request(traced64, f"gateway-traced{shape}"), 3),
                "<= 0.10",
            ),
            ("Node CPU per hit through the gateway, ms", median_spread(per_request(off64, "node"), 3), ""),
            (
                "**Node CPU per hit, through the gateway / direct GET**",
                median_spread(ratio(per_request(off64, "node"), per_request("direct64", "node")), 2),
                "<= 1.2",
            ),
            ("Hit throughput, 100 % traces exported, requests/s", median_spread(t[traced64], 0), ""),
            (
                "Collector CPU per traced hit (receiving, discarding), ms",
                median_spread(per_request(traced64, "collector"), 3),
                "",
            ),
            (
                "**Hit throughput, traces exported / telemetry off**",
                median_spread(ratio(t[traced64], t[off64]), 2),
                ">= 0.90",
            ),
            (
                "RSS idle after the runs, telemetry off / traced, MB",
                f"{rss_idle[f'gateway-off{shape}']:.1f} / {rss_idle[f'gateway-traced{shape}']:.1f}",
                "",
            ),
            *(
                (
                    f"**RSS with {OPEN_CONNECTIONS:,} open keep-alive connections**, {wave} requests in flight"
                    " at a time, telemetry off / traced, MB",
                    f"{rss_open[f'gateway-off{shape}', wave]:.1f} / {rss_open[f'gateway-traced{shape}', wave]:.1f}",
                    "<= 40",
                )
                for wave in HOLD_WAVES
            ),
        ]

    lines = [
        ("*The floor: direct GET of the same documents on the node*", "", ""),
        ("Hit path, 64 connections: direct GET on the node, requests/s", median_spread(t["direct64"], 0), ""),
        ("Hit p50 / p99, direct GET (64 conn.), ms", latencies("direct64"), ""),
        ("Hit p50 / p99, direct GET (16 conn.), ms", latencies("direct16"), ""),
        ("Node CPU per direct GET, ms", median_spread(per_request("direct64", "node"), 3), ""),
        *hit_lines("", "Gateway, default serving threads (one per core: 2 here)"),
        *hit_lines("-one-thread", "Gateway, one serving thread (GATEWAY__SERVER__WORKER_THREADS=1)"),
        ("*Miss path and coalescing (default gateway, telemetry off)*", "", ""),
        ("Miss path, 16 connections: direct model calls, requests/s", median_spread(t["model16"], 0), ""),
        ("Miss path, 16 connections: gateway, requests/s", median_spread(t["miss16"], 0), ""),
        ("Miss throughput, gateway / direct model call", median_spread(ratio(t["miss16"], t["model16"]), 2), ""),
        (
            "Miss p50, direct / gateway, ms",
            f"{median_spread(p50['model16'], 2)} / {median_spread(p50['miss16'], 2)}",
            "",
        ),
        (
            "Miss p99, direct / gateway, ms",
            f"{median_spread(p99['model16'], 2)} / {median_spread(p99['miss16'], 2)}",
            "",
        ),
        ("Gateway CPU per miss (telemetry off), ms", median_spread(per_request("miss16", "gateway-off"), 3), ""),
        ("**Model calls for 50 concurrent misses on one id**", f"{model_calls} ({answered} of 50 answered 200)", "1"),
    ]
    table = ["| figure | median (min-max) over repeats | target (issue 11) |", "| --- | --- | --- |"]
    table += [f"| {name} | {value} | {target} |" for name, value, target in lines]
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Command: `{command}` ({args.repeats} repeats of {args.seconds:g} s wrk runs, {WRK_THREADS} wrk threads;"
            f" hit set {len(HIT_IDS):,} documents)",
            "",
            f"- date: {started:%Y-%m-%d %H:%M} UTC; commit {git_commit()}",
            f"- machine: {machine()}",
            f"- load average (1 / 5 / 15 min) before: {load_before}; after: {load_after}",
            f"- socket errors and non-2xx answers over all timed runs: {errors}",
            "",
            *table,
            "",
            "Ratios are taken per repeat between runs seconds apart, then summarised. The load",
            "generator, the node, the model service and the gateway share the machine's cores.",
            "",
        ]
    )


def git_commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" (with local changes)" if git("status", "--porcelain") else "")


if __name__ == "__main__":
    sys.exit(main())
