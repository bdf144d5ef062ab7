"""Wire and storage framing: msgpack body, lz4 above a threshold, CRC32, size limits.

Frame layout (12-byte header, big endian)::

    b"MF" | version u8 | flags u8 | crc32 u32 | len(body) u32 | body

The CRC covers version, flags, length and body, so no flipped bit anywhere
after the magic can turn one valid frame into another.

``flags & 1`` means the body is an lz4 block whose first 4 bytes (little
endian, as lz4 stores it) give the decompressed size; that size is checked
against the limit before anything is decompressed.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import lz4.block
import msgpack

from .errors import CodecError, FrameTooLarge

MAGIC = b"MF"
VERSION = 1
FLAG_LZ4 = 0x01
HEADER = struct.Struct(">2sBBII")
HEADER_SIZE = HEADER.size

BYTES_LIKE = (bytes, bytearray, memoryview)  # a tuple: ``bytes | bytearray | memoryview`` is built anew at each use
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
DEFAULT_COMPRESS_THRESHOLD = 1024


@dataclass(frozen=True)
class CodecLimits:
    max_frame_bytes: int = DEFAULT_MAX_FRAME
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
    compression_enabled: bool = True


DEFAULT_LIMITS = CodecLimits()


_packers = threading.local()  # one Packer per thread: msgpack.packb builds a new one per call, which costs 2x the pack


def pack(obj: Any) -> bytes:
    """Plain msgpack (no frame); for values inside a framed record."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, datetime=False)
    try:
        return packer.pack(obj)  # a failed pack leaves the packer empty for the next
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"value cannot be encoded: {exc}",
                         hint="use JSON-like data: dict, list, str, int, float, bool, None, bytes") from None


def unpack(data: bytes) -> Any:
    """Plain msgpack back into a value; raises CodecError on anything that is not msgpack bytes."""
    if not isinstance(data, BYTES_LIKE):
        raise CodecError(f"msgpack must be bytes, not {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"malformed msgpack: {type(exc).__name__}") from None


CHECKED = struct.Struct(">BBI")  # what the checksum covers of the header: version, flags, body length


def frame_checksum(version: int, flags: int, body: bytes) -> int:
    """CRC32 over everything the header says about the body, and the body itself."""
    return zlib.crc32(body, zlib.crc32(CHECKED.pack(version, flags, len(body))))


def encode(obj: Any, limits: CodecLimits = DEFAULT_LIMITS) -> bytes:
    """Frame ``obj``; raises FrameTooLarge when it would exceed the limit."""
    body = pack(obj)
    if len(body) > limits.max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over the {limits.max_frame_bytes}-byte limit")
    flags = 0
    if limits.compression_enabled and len(body) >= limits.compress_threshold:
        compressed = lz4.block.compress(body, store_size=True)
        if len(compressed) < len(body):
            body, flags = compressed, FLAG_LZ4
    return HEADER.pack(MAGIC, VERSION, flags, frame_checksum(VERSION, flags, body), len(body)) + body


def decode(frame: bytes | bytearray | memoryview, limits: CodecLimits = DEFAULT_LIMITS) -> Any:
    """Check and unframe; raises CodecError naming what is wrong, never anything else."""
    flags, body = verify(frame, limits)
    if flags & FLAG_LZ4:
        if len(body) < 4:
            raise CodecError("compressed frame too short")
        size = int.from_bytes(body[:4], "little", signed=True)
        if size < 0 or size > limits.max_frame_bytes:
            raise FrameTooLarge(f"frame expands to {size} bytes, over the {limits.max_frame_bytes}-byte limit")
        try:
            body = lz4.block.decompress(body)
        except Exception:
            raise CodecError("lz4 body does not decompress") from None
    return unpack(body)


def verify(frame: Any, limits: CodecLimits = DEFAULT_LIMITS) -> tuple[int, bytes]:
    """A frame's flags and body once its type, header, length, size and checksum are right; raises CodecError.

    What a store checks on a stored frame before handing it on: cheap, no value is built.
    """
    if not isinstance(frame, BYTES_LIKE):
        # a store column of another type (TEXT, a number); bytes() of an int would even allocate that many
        raise CodecError(f"a frame must be bytes, not {type(frame).__name__}")
    if type(frame) is not bytes:
        frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise CodecError(f"frame of {len(frame)} bytes is shorter than its {HEADER_SIZE}-byte header")
    magic, version, flags, crc, length = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise CodecError("not a mesh frame (bad magic)")
    if version != VERSION:
        raise CodecError(f"frame version {version} is not supported (this node speaks {VERSION})")
    if length > limits.max_frame_bytes:
        raise FrameTooLarge(f"frame of {length} bytes is over the {limits.max_frame_bytes}-byte limit")
    body = frame[HEADER_SIZE:]
    if len(body) != length:
        raise CodecError(f"frame body is {len(body)} bytes, header says {length}")
    if frame_checksum(version, flags, body) != crc:
        raise CodecError("frame checksum mismatch (corrupted in transit or at rest)")
    if flags & ~FLAG_LZ4:
        raise CodecError(f"unknown frame flags {flags:#x}")
    return flags, body
