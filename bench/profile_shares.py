"""Groups a flat `perf record` profile of the gateway by component: the shares of its CPU
that the kernel, the allocator, hyper, tokio, tracing/OpenTelemetry, ... take.

    perf record -F 1999 -p <gateway pid> -o gateway.perf.data -- sleep 20
    python bench/profile_shares.py gateway.perf.data [more.perf.data ...]

A symbol goes to the first component whose pattern it matches (see COMPONENTS); `--top N`
also lists the N hottest symbols of each component.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict

# (component, pattern over "dso symbol"), first match wins; order matters.
COMPONENTS: list[tuple[str, str]] = [
    (
        "kernel: futex, scheduler, wake-ups",
        r"kallsyms.*(futex|schedule|switch_to|try_to_wake|wake_up|ttwu|enqueue|dequeue|pick_next|update_curr|finish_task|__switch|select_task|psi_)",
    ),
    ("kernel: epoll", r"kallsyms.*(epoll|ep_)"),
    (
        "kernel: TCP/IP and sockets",
        r"kallsyms.*(tcp|sock|skb|ip_|inet|__dev|net_rx|netif|loopback|napi|__x64_sys_(sendto|recvfrom|read|write)|copy_user|_copy_|rep_movs|clear_user|check_heap|__check_object)",
    ),
    ("kernel: other (syscall entry/exit, timers, irq)", r"kallsyms"),
    (
        "allocator (malloc/free)",
        r"(malloc|free|_int_|realloc|calloc|tcache|arena|cfree|mi_|je_|sdallocx|__rust_(alloc|dealloc|realloc)|alloc::alloc)",
    ),
    ("libc: memcpy/memmove/other", r"libc\.so"),
    ("tracing, tracing-subscriber, OpenTelemetry", r"(tracing|opentelemetry|sharded_slab)"),
    ("hyper (HTTP/1 server and client codec)", r"(hyper::|httparse|h2::|want::)"),
    ("hyper-util / reqwest client (pool, connector)", r"(hyper_util|reqwest)"),
    ("tokio (scheduler, I/O driver, timers, sync)", r"(tokio|mio::|parking_lot)"),
    ("axum, tower, tower-http", r"(axum|tower|matchit)"),
    ("JSON (serde_json)", r"(serde_json|serde::|_serde|itoa|ryu)"),
    ("http, url, headers", r"(http::|url::|idna|percent_encoding|bytes::|form_urlencoded)"),
    ("chrono, sha2, hex", r"(chrono|sha2|hex::)"),
    ("gateway code", r"gateway::"),
    ("Rust std and core (fmt, hashing, strings)", r"(core::|std::|alloc::|<alloc|hashbrown|__memcpy|memcpy)"),
]


def samples(path: str) -> dict[str, float]:
    """Percent of samples per `dso symbol` in a profile."""
    report = subprocess.run(
        [
            "perf",
            "report",
            "-i",
            path,
            "--no-children",
            "-g",
            "none",
            "--sort",
            "dso,sym",
            "--percent-limit",
            "0",
            "--stdio",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares: dict[str, float] = {}
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if match:
            key = f"{match[2]} {match[3].strip()}"
            shares[key] = shares.get(key, 0.0) + float(match[1])
    return shares


def group(shares: dict[str, float]) -> dict[str, list[tuple[float, str]]]:
    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for key, share in shares.items():
        component = next((name for name, pattern in COMPONENTS if re.search(pattern, key)), "other")
        groups[component].append((share, key))
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()
    grouped = {path: group(samples(path)) for path in args.profiles}
    names = [name for name, _ in COMPONENTS] + ["other"]
    print("| component | " + " | ".join(args.profiles) + " |")
    print("| --- |" + " --- |" * len(args.profiles))
    for name in names:
        cells = [f"{sum(s for s, _ in grouped[p].get(name, [])):.1f} %" for p in args.profiles]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for path in args.profiles if args.top else []:
        print(f"\n{path}")
        for name in names:
            top = sorted(grouped[path].get(name, []), reverse=True)[: args.top]
            if top:
                print(f"  {name}")
                for share, key in top:
                    print(f"    {share:5.2f}  {key[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
