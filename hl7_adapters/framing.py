"""MLLP framing (HL7 MLLP release 2 transport): ``0x0B payload 0x1C 0x0D``, as a sans-I/O decoder.

Kept free of sockets so that every framing rule is testable byte by byte, and so that the
server and the client share one implementation. Rules:

* bytes outside a frame are discarded (and counted);
* a frame may arrive in any number of reads, and one read may hold several frames;
* ``0x1C`` not followed by ``0x0D`` is payload, except before ``0x0B`` (a sender that forgot
  the ``0x0D``), which ends the frame; a ``0x1C`` that is the last byte received so far may
  end the frame too: the reader decides (``end_pending`` / ``end_frame``) when nothing
  follows it for a moment or the peer closes (``0x1C`` is no HL7 text character, so one
  left hanging is an end block);
* ``0x0B`` inside a frame means the sender started over: the unfinished frame is dropped;
* a frame longer than ``max_frame_bytes`` is not buffered beyond that size: its first
  ``max_frame_bytes`` bytes are kept (enough to read its MSH for a NAK), the rest is
  discarded, and the frame is delivered with ``oversize=True`` once its end arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"


def frame(payload: bytes) -> bytes:
    """Wrap a payload in an MLLP frame."""
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame. ``payload`` is only the head when ``oversize`` is True."""

    payload: bytes
    size: int
    oversize: bool = False


class FrameDecoder:
    """Incremental MLLP deframer; feed it bytes, get complete frames back."""

    def __init__(self, max_frame_bytes: int = 16 * 1024 * 1024) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self.discarded = 0  # bytes seen outside any frame
        self.dropped_frames = 0  # frames abandoned by a new start block
        self.frames_started = 0
        self._buf = bytearray()
        self._size = 0
        self._in_frame = False
        self._pending_end = False  # the last byte fed was 0x1C inside a frame

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (a vanishing peer leaves it so)."""
        return self._in_frame

    @property
    def oversize(self) -> bool:
        """True while the current, unfinished frame has exceeded the limit."""
        return self._in_frame and self._size > self.max_frame_bytes

    @property
    def size(self) -> int:
        """Bytes of the current, unfinished frame received so far."""
        return self._size

    @property
    def end_pending(self) -> bool:
        """True when the last byte received was ``0x1C`` inside a frame (its ``0x0D`` may
        still come)."""
        return self._pending_end

    def end_frame(self) -> Frame:
        """End the current frame at a pending ``0x1C`` that no ``0x0D`` followed."""
        if not self._pending_end:
            raise ValueError("no end block pending")
        self._pending_end = False
        return self._finish()

    @property
    def head(self) -> bytes:
        """The buffered start of the current frame."""
        return bytes(self._buf)

    def _begin(self) -> None:
        self.frames_started += 1
        self._buf.clear()
        self._size = 0
        self._in_frame = True

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        room = self.max_frame_bytes - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        self._size += len(data)

    def _finish(self) -> Frame:
        done = Frame(bytes(self._buf), self._size, self._size > self.max_frame_bytes)
        self._buf.clear()
        self._size = 0
        self._in_frame = False
        return done

    def feed(self, data: bytes) -> list[Frame]:
        """Consume bytes; return the frames they completed, in order."""
        frames: list[Frame] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        if self._pending_end and end:
            self._pending_end = False
            first = data[0:1]
            if first == CARRIAGE_RETURN:
                frames.append(self._finish())
                pos = 1
            elif first == START_BLOCK:
                frames.append(self._finish())
            else:
                self._append(END_BLOCK)
        while pos < end:
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                if start < 0:
                    self.discarded += end - pos
                    break
                self.discarded += start - pos
                self._begin()
                pos = start + 1
                continue
            stop = data.find(END_BLOCK, pos)
            restart = data.find(START_BLOCK, pos)
            if restart >= 0 and (stop < 0 or restart < stop):
                self.dropped_frames += 1
                self._begin()
                pos = restart + 1
                continue
            if stop < 0:
                self._append(view[pos:])
                break
            self._append(view[pos:stop])
            after = data[stop + 1 : stop + 2]
            if after == CARRIAGE_RETURN:
                frames.append(self._finish())
                pos = stop + 2
            elif after == START_BLOCK:
                frames.append(self._finish())
                pos = stop + 1
            elif not after:
                self._pending_end = True
                pos = stop + 1
            else:
                self._append(END_BLOCK)
                pos = stop + 1
        return frames
