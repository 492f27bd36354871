"""Reading a tar layer as a stream: read ahead in large blocks, and to its very end.

Every layer is read once, forward; tarfile's own stream mode copies its buffer on
each small read, and it ends a stream at a header it cannot read, or at a lone
zero block, as if the layer ended there, when an engine may read on.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile

_CHUNK = 1 << 20


class ForwardReader:
    """A stream read ahead in large blocks, which tarfile may open as a file ("r:").

    tarfile's own stream mode ("r|") copies what is left of its block on each
    read: two small reads per member, of a layer of 100,000 small files, cost
    seconds. A seek may only go forward (reading on); ``raw`` is never closed.
    """

    def __init__(self, raw: io.RawIOBase) -> None:
        self._buffer = io.BufferedReader(raw, _CHUNK)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._buffer.read(size)
        self._position += len(data)
        return data

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET:
            raise OSError(errno.ESPIPE, "a stream only reads forward")
        if position < self._position:  # tarfile goes back only for a header's lie (a size < 0)
            raise tarfile.ReadError(f"a member goes back to offset {position} of the stream")
        while self._position < position:
            if not self.read(min(position - self._position, _CHUNK)):
                break
        return self._position

    def detach(self) -> None:
        """Let ``raw`` go on being read (a BufferedReader closes what it holds)."""
        self._buffer.detach()


def check_ended(stream: ForwardReader) -> None:
    """What follows a layer's end must be its end-of-archive zeros: a header tarfile could
    not read (a negative offset, in a patched Python) or a lone zero block would otherwise
    hide the members after it. Read through ``stream``, so its digest covers the rest."""
    while chunk := stream.read(_CHUNK):
        if chunk.count(0) != len(chunk):
            raise tarfile.ReadError("data follows where it seems to end (an unreadable header)")
