"""Free loopback ports, for the servers, the SLURM cluster's daemons and the bench."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    The port is closed again before it is returned, so another process could take it first; the
    servers here bind it within a second, and a failed bind shows in their logs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
