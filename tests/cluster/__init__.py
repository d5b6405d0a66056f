"""The cluster module: gateway replicas on a three-node search cluster, a node or a replica lost."""
