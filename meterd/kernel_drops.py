"""How many datagrams the kernel dropped on meterd's UDP socket before anyone read them.

When the readers fall behind, the socket's receive buffer fills and the
kernel drops what does not fit, before meterd (or a UDP worker, reading the
same socket) ever sees it: no counter of meterd's can count those. The
kernel keeps a count per socket, the last column of ``/proc/net/udp`` (and
``udp6``), found by the socket's inode. Read when ``/metrics`` is scraped;
elsewhere than Linux there is no such file and the count is not reported.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def drops(inode: int) -> int | None:
    """The kernel's drop count of the UDP socket with this inode; None if it is not found."""
    wanted = str(inode)
    for table in _TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 12 and fields[9] == wanted:
                return int(fields[-1])
    return None
