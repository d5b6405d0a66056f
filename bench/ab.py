"""A/B of gateway builds on the hit path: CPU per request of each, interleaved in one run.

`make bench` measures one build against the floor; this compares two or more gateway
executables (say, before and after a change) under the same wrk load, run after run
(A B A B ...), so a neighbour's load moves every side alike. It starts the bed's search
node and model service once (and the collector when a variant is traced), one gateway per
variant, stores the hit set, then prints per variant the median and min-max of gateway
CPU per hit and requests/s, and the per-round ratio of each variant to the first.

    python bench/ab.py before=/tmp/gateway-before after=target/release/gateway \
        --mode off --rounds 7 --seconds 5

`--perf DIR` then records a flat `perf record` profile of each variant in one more run (not
counted in the table), and counts its context switches and syscalls per request (`perf stat`)
(bench/profile_shares.py groups it by component).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (  # noqa: E402
    HIT_IDS,
    HOLD_WAVES,
    OPEN_CONNECTIONS,
    exported_env,
    gateway_env,
    hold_connections,
    idle_cpu_rates,
    predict_line,
    start_collector,
    start_gateway,
    warm_hit_set,
    wrk,
)
from harness.collector import NO_TELEMETRY_ENV  # noqa: E402
from harness.model_service import start_model_service  # noqa: E402
from harness.process import stop_all  # noqa: E402
from harness.provisioning import provisioned  # noqa: E402
from harness.search_node import SearchNode  # noqa: E402

# What `--perf` counts for the kernel share: switches, wake-up syscalls, socket syscalls.
COUNTED = [
    "context-switches",
    "cpu-migrations",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_read",
]
# Allocations too, when a uprobe on glibc's malloc exists
# (`perf probe -x /lib/x86_64-linux-gnu/libc.so.6 --add malloc`); its traps then inflate that
# run's profile (kernel share), so count allocations and profile in separate invocations.
if any(
    Path(root, "events/probe_libc/malloc").exists() for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
):
    COUNTED.append("probe_libc:malloc")


def per_request(stat_csv: Path, requests: int) -> dict[str, float]:
    """`perf stat -x ,` counts divided by the requests of the run they covered."""
    counts = {}
    for line in stat_csv.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].strip().isdigit():
            counts[fields[2]] = int(fields[0]) / max(requests, 1)
    return counts


def summary(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "variants",
        nargs="+",
        help="NAME=PATH of a gateway executable, then ;VAR=VALUE for its own environment (e.g."
        " 'one-thread=/tmp/gateway;GATEWAY__SERVER__WORKER_THREADS=1'); the first is the baseline",
    )
    parser.add_argument("--mode", choices=("off", "traced"), default="off", help="telemetry of every gateway")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--perf", type=Path, help="directory for a perf.data and perf stat counts per variant (one extra run)"
    )
    parser.add_argument(
        "--rss", action="store_true", help="then the RSS of each with 1,000 keep-alive connections open, as make bench"
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every gateway")
    args = parser.parse_args()
    variants = []
    for spec in args.variants:
        binary, *own_env = spec.split(";")
        name, path = binary.split("=", 1)
        variants.append((name, Path(path), dict(pair.split("=", 1) for pair in own_env)))

    work_dir = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    venv_bin = Path(sys.executable).parent
    print(f"ab: parts log to {work_dir}/logs", file=sys.stderr)
    try:
        node = SearchNode.start(provisioned("provision-search-node.sh"), work_dir)
        model = start_model_service(venv_bin, work_dir)
        common = gateway_env(model.url, node.url) | dict(pair.split("=", 1) for pair in args.env)
        if args.mode == "traced":
            _, endpoint = start_collector(provisioned("provision-collector.sh"), work_dir)
            common |= exported_env(endpoint)
        else:
            common |= NO_TELEMETRY_ENV
        gateways = {name: start_gateway(path, work_dir, name, common | own_env) for name, path, own_env in variants}
        warm_hit_set(next(iter(gateways.values())), node.url)
        lines = [predict_line(data_id) for data_id in HIT_IDS]
        pids = {name: gateway.process.pid for name, gateway in gateways.items()} | {"node": node.process.pid}
        # Only the node's idle work is subtracted (its JVM works in the background): a gateway
        # idles at next to nothing, and the first one's rate read here would still hold the
        # hit set's writes.
        idle: dict[str, float] = {}
        for gateway in gateways.values():
            wrk(gateway.url, lines, args.connections, 2, work_dir, pids, idle)

        cpu: dict[str, list[float]] = {name: [] for name in gateways}
        rps: dict[str, list[float]] = {name: [] for name in gateways}
        node_cpu: dict[str, list[float]] = {name: [] for name in gateways}
        counted: dict[str, dict[str, float]] = {}
        for round_ in range(args.rounds):
            idle.update(idle_cpu_rates({"node": node.process.pid}))
            # Alternate the order too, so neither side always runs first after the idle read.
            order = list(gateways.items()) if round_ % 2 == 0 else list(reversed(gateways.items()))
            for name, gateway in order:
                run = wrk(gateway.url, lines, args.connections, args.seconds, work_dir, pids, idle)
                if run.errors:
                    print(f"ab: {name}: {run.errors} errors", file=sys.stderr)
                cpu[name].append(run.cpu_per_request_ms(name))
                node_cpu[name].append(run.cpu_per_request_ms("node"))
                rps[name].append(run.throughput)
            print(
                f"ab: round {round_ + 1}: " + ", ".join(f"{n} {cpu[n][-1]:.4f} ms" for n in gateways), file=sys.stderr
            )
        # Profiled apart, after the measured rounds: the profiler's own cost would count.
        for name, gateway in gateways.items() if args.perf else ():
            args.perf.mkdir(parents=True, exist_ok=True)
            pid = str(gateway.process.pid)
            record = ["perf", "record", "-F", "1999", "-p", pid, "-o", str(args.perf / f"{name}.perf.data")]
            stat = ["perf", "stat", "-x", ",", "-e", ",".join(COUNTED), "-p", pid]
            stat += ["-o", str(args.perf / f"{name}.stat.csv")]
            recorders = [
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for argv in (record, stat)
            ]
            run = wrk(gateway.url, lines, args.connections, args.seconds, work_dir, pids, idle)
            for recorder in recorders:
                recorder.send_signal(signal.SIGINT)
                recorder.wait()
            counted[name] = per_request(args.perf / f"{name}.stat.csv", run.requests)
        rss = {
            (name, wave): asyncio.run(hold_connections(gateway.url, pids[name], OPEN_CONNECTIONS, wave))
            for name, gateway in gateways.items()
            for wave in (HOLD_WAVES if args.rss else ())
        }
    finally:
        stop_all()

    base = variants[0][0]
    print(f"mode {args.mode}, {args.rounds} rounds of {args.seconds} s, {args.connections} connections")
    print("| variant | gateway CPU per hit, ms | ratio to first | requests/s | node CPU per hit, ms |")
    print("| --- | --- | --- | --- | --- |")
    for name in cpu:
        ratios = [x / y for x, y in zip(cpu[name], cpu[base], strict=True)]
        print(
            f"| {name} | {summary(cpu[name], 4)} | {summary(ratios, 3)} | {summary(rps[name], 0)}"
            f" | {summary(node_cpu[name], 4)} |"
        )
    for name, counts in counted.items():
        print(f"{name}, per request (last round): " + ", ".join(f"{k} {v:.2f}" for k, v in counts.items()))
    for (name, wave), mb in rss.items():
        print(f"RSS of {name}, {OPEN_CONNECTIONS:,} connections open, {wave} in flight at a time: {mb:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
