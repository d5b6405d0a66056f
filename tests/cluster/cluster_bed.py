"""What the cluster cases share besides fixtures: the alias their gateways store under, how
long a cluster gets to turn green, and reading answers and shard placement."""

from __future__ import annotations

from faults.fault_load import Answer
from harness.search_cluster import SearchCluster

# The alias the module's gateways store under; their lease index is `<ALIAS>-leases`.
ALIAS = "gw-cluster"
# Long enough for a node's JVM to start again and rejoin on two shared cores.
GREEN_TIMEOUT_SECONDS = 180


def primary_holder(cluster: SearchCluster) -> str:
    """The name of the node holding the primary of the predictions index (the hardest node to
    lose); fails unless its replica is started too, so losing any one node loses no data."""
    holders = cluster.shard_nodes(ALIAS)
    assert sum(len(copies) for copies in holders.values()) >= 2, f"the index has a started replica: {holders}"
    return next(name for name, copies in holders.items() if "p" in copies)


def failed(answers: list[Answer]) -> list[str]:
    """The answers that were not 2xx (or no HTTP answer at all), briefly."""
    return [a.brief() for a in answers if a.status is None or not 200 <= a.status < 300]
