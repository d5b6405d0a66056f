"""The entry point's listener: bound before serving, real port known, TCP_NODELAY possible."""

import socket

from model_service.__main__ import bind


def test_the_listener_is_bound_to_a_kernel_chosen_port_on_loopback():
    listener = bind("127.0.0.1", 0)
    try:
        host, port = listener.getsockname()[:2]
    finally:
        listener.close()

    assert host == "127.0.0.1"
    assert port > 0


def test_the_listener_declares_tcp_so_asyncio_turns_off_nagles_algorithm():
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
