"""Arrays for the audit statements, already in PostgreSQL's binary format.

psycopg dumps a Python list as an array in Python, element by element (finding a dumper for
each, checking for nulls and nesting): for a batch of audit records that was most of the
client's cost of the statement. These lists are flat, never null and of one known type, so
they are packed here in one pass and handed to psycopg as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format

_TEXT, _INT8, _BYTEA = 25, 20, 17  # element type OIDs
_HEAD = struct.Struct("!iiIii")  # dimensions, has nulls, element type, length, lower bound
_LENGTH = struct.Struct("!i")
_INT8_ITEM = struct.Struct("!iq")  # length 8, the value


class PackedArray(bytes):
    """A one-dimensional array without nulls, in binary: header, then each element's length
    and bytes. Subclasses say the element type."""

    element_oid = 0

    @classmethod
    def _packed(cls, count: int, elements: Iterable[bytes]) -> PackedArray:
        return cls(_HEAD.pack(1, 0, cls.element_oid, count, 1) + b"".join(elements))

    @classmethod
    def of_bytes(cls, items: Iterable[bytes]) -> PackedArray:
        listed = list(items)
        return cls._packed(len(listed), (_LENGTH.pack(len(i)) + i for i in listed))


class TextArray(PackedArray):
    element_oid = _TEXT

    @classmethod
    def of(cls, items: Iterable[str]) -> PackedArray:
        return cls.of_bytes(item.encode() for item in items)


class ByteaArray(PackedArray):
    element_oid = _BYTEA

    @classmethod
    def of(cls, items: Iterable[bytes]) -> PackedArray:
        return cls.of_bytes(items)


class Int8Array(PackedArray):
    element_oid = _INT8

    @classmethod
    def of(cls, items: Iterable[int]) -> PackedArray:
        listed = list(items)
        return cls._packed(len(listed), (_INT8_ITEM.pack(8, value) for value in listed))


def _dumper(array_oid: int) -> type[Dumper]:
    class PackedDumper(Dumper):
        format = Format.BINARY
        oid = array_oid

        def dump(self, obj: bytes) -> bytes:
            return obj

    return PackedDumper


adapters.register_dumper(TextArray, _dumper(1009))  # text[]
adapters.register_dumper(ByteaArray, _dumper(1001))  # bytea[]
adapters.register_dumper(Int8Array, _dumper(1016))  # bigint[]
