"""Free loopback ports for the programs that must be told a port number up front: the search
node (HTTP and transport, kept for its restart on the same data) and the collector (its config).
The gateway and the model service bind port 0 and print the address instead."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it; the small window before the process binds it is the
    price of starting programs that take a port number rather than a socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
