"""The answers generation: a counter in shared memory that meterd bumps and its HTTP workers read.

An HTTP worker repeats meterd's answer to a ``/getAlarme`` poll it sees again
(:mod:`meterd.http_worker`), each answer tagged with the counter's value when
the poll was sent. meterd bumps the counter right after every alarm
settlement and every change of credentials, before it answers anything that
change decided (an acknowledgement's answer, say), so any request a client
sends after that answer finds the new value and goes to meterd. A frame on
the worker's pipe could arrive after such a request; the shared page is read
in the same instant the request is handled, without a syscall.

Linux's ``memfd_create``: one 8-byte aligned word, written whole by one writer.
"""

from __future__ import annotations

import mmap
import os
import struct

_WORD = struct.Struct("=Q")


class Generation:
    def __init__(self, fd: int | None = None) -> None:
        """A new counter at 0, or the one whose memfd a worker inherited as ``fd``."""
        if fd is None:
            fd = os.memfd_create("meterd-alarms-generation")
            os.ftruncate(fd, _WORD.size)
        self.fd = fd
        self._map = mmap.mmap(fd, _WORD.size)

    def value(self) -> int:
        return _WORD.unpack_from(self._map)[0]

    def bump(self) -> None:
        _WORD.pack_into(self._map, 0, self.value() + 1)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
