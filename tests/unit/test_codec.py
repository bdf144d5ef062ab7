"""Framing: msgpack body, lz4 above a threshold, CRC32, size limits (mesh_core/codec.py)."""

from __future__ import annotations

import hashlib
import struct

import lz4.block
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh_core import codec
from mesh_core.codec import (
    DEFAULT_LIMITS,
    FLAG_LZ4,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    CodecLimits,
    decode,
    encode,
    frame_checksum,
    pack,
    unpack,
)
from mesh_core.errors import CodecError, FrameTooLarge, MeshError

FLAGS_OFFSET = 3
CRC_OFFSET = 4
LENGTH_OFFSET = 8

# --- strategies ------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=12,
)
# cheap values whose frames fall both below and above the compression threshold,
# compressed (repetitive) or not (noise)
sized_values = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.builds(lambda unit, n: unit * n, st.text(min_size=1, max_size=6), st.integers(1, 1500)),
    st.builds(lambda unit, n: unit * n, st.binary(min_size=1, max_size=6), st.integers(1, 1500)),
    st.builds(lambda v, n: [v] * n, scalars, st.integers(1, 300)),
    st.builds(lambda seed, n: [seed * i for i in range(n)], st.integers(-1000, 1000), st.integers(1, 400)),
)


def frame_of(body: bytes, *, flags: int = 0, version: int = VERSION, magic: bytes = MAGIC,
             crc: int | None = None, length: int | None = None) -> bytes:
    """A frame built by hand, with a valid checksum and length unless told otherwise."""
    return HEADER.pack(magic, version, flags,
                       frame_checksum(version, flags, body) if crc is None else crc,
                       len(body) if length is None else length) + body


def header_fields(frame: bytes) -> tuple:
    return HEADER.unpack_from(frame)


def assert_codec_error_only(frame: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> CodecError:
    """decode() must raise CodecError (or a subclass), never anything else, never succeed."""
    try:
        result = decode(frame, limits)
    except CodecError as exc:
        assert str(exc)
        return exc
    pytest.fail(f"corrupt frame decoded without error to {result!r:.200}")


# --- round trips -----------------------------------------------------------------

@given(values)
def test_round_trip_of_msgpack_values(value):
    frame = encode(value)
    assert decode(frame) == value
    assert decode(bytearray(frame)) == value
    assert decode(memoryview(frame)) == value
    assert unpack(pack(value)) == value


@given(st.one_of(values, sized_values), st.integers(0, 4096), st.booleans())
def test_round_trip_and_header_with_any_threshold(value, threshold, enabled):
    limits = CodecLimits(compress_threshold=threshold, compression_enabled=enabled)
    frame = encode(value, limits)
    assert decode(frame, limits) == value
    assert decode(frame) == value  # readers do not need the writer's compression settings
    magic, version, flags, crc, length = header_fields(frame)
    body = frame[HEADER_SIZE:]
    raw = pack(value)
    assert (magic, version) == (MAGIC, VERSION)
    assert length == len(body)
    assert crc == frame_checksum(version, flags, body)
    if flags == 0:
        assert body == raw
        # left plain only when compression is off, the body is small, or lz4 would not shrink it
        assert (not enabled or len(raw) < threshold
                or len(lz4.block.compress(raw, store_size=True)) >= len(raw))
    else:
        assert flags == FLAG_LZ4
        assert enabled and len(raw) >= threshold
        assert len(body) < len(raw)
        assert lz4.block.decompress(body) == raw


def test_round_trip_examples():
    for value in [None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.5, -0.0, float("inf"),
                  "", "héllo ✓", b"", b"\x00\xff", [], {}, [1, [2, [3]]], {"a": {"b": [None, b"x"]}}]:
        assert decode(encode(value)) == value


# --- compression -----------------------------------------------------------------

def test_compressed_above_threshold():
    value = {"text": "abc" * 1000}
    assert len(pack(value)) >= DEFAULT_LIMITS.compress_threshold
    frame = encode(value)
    assert frame[FLAGS_OFFSET] == FLAG_LZ4
    assert len(frame) < len(pack(value))
    assert decode(frame) == value


def test_not_compressed_below_threshold():
    value = {"text": "abc" * 100}
    assert len(pack(value)) < DEFAULT_LIMITS.compress_threshold
    frame = encode(value)
    assert frame[FLAGS_OFFSET] == 0
    assert frame[HEADER_SIZE:] == pack(value)


def test_threshold_is_inclusive():
    value = "x" * 500
    body_len = len(pack(value))
    at = CodecLimits(compress_threshold=body_len)
    above = CodecLimits(compress_threshold=body_len + 1)
    assert encode(value, at)[FLAGS_OFFSET] == FLAG_LZ4
    assert encode(value, above)[FLAGS_OFFSET] == 0


def test_compression_disabled_is_honoured():
    value = {"text": "abc" * 5000}
    limits = CodecLimits(compression_enabled=False)
    frame = encode(value, limits)
    assert frame[FLAGS_OFFSET] == 0
    assert frame[HEADER_SIZE:] == pack(value)
    assert decode(frame, limits) == value
    assert decode(frame) == value  # a reader with compression on still reads it


def test_incompressible_body_is_sent_plain():
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(200))
    frame = encode(noise)
    assert frame[FLAGS_OFFSET] == 0
    assert decode(frame) == noise


@given(st.text(min_size=1, max_size=4), st.integers(400, 3000))
def test_compression_flag_follows_threshold(unit, repeat):
    value = unit * repeat
    body_len = len(pack(value))
    frame = encode(value)
    if body_len < DEFAULT_LIMITS.compress_threshold:
        assert frame[FLAGS_OFFSET] == 0
    else:
        # highly repetitive text always shrinks under lz4
        assert frame[FLAGS_OFFSET] == FLAG_LZ4
        assert len(frame) - HEADER_SIZE < body_len
    assert decode(frame) == value


# --- encode errors ---------------------------------------------------------------

@pytest.mark.parametrize("value", [object(), 2**64, -(2**63) - 1, {1j: 1}, {"a": {1, 2}}])
def test_unencodable_values_raise_codec_error(value):
    with pytest.raises(CodecError) as info:
        encode(value)
    assert not isinstance(info.value, FrameTooLarge)
    with pytest.raises(CodecError):
        pack(value)


def test_encode_oversize_raises_frame_too_large():
    limits = CodecLimits(max_frame_bytes=100)
    with pytest.raises(FrameTooLarge):
        encode(b"x" * 200, limits)
    # even when the body would compress far below the limit
    with pytest.raises(FrameTooLarge):
        encode("a" * 10_000, limits)
    assert decode(encode(b"x" * 50, limits), limits) == b"x" * 50


@given(st.binary(max_size=300), st.integers(10, 300))
def test_encode_respects_any_limit(data, limit):
    limits = CodecLimits(max_frame_bytes=limit)
    body_len = len(pack(data))
    if body_len > limit:
        with pytest.raises(FrameTooLarge):
            encode(data, limits)
    else:
        assert decode(encode(data, limits), limits) == data


def test_frame_too_large_is_a_codec_error_and_mesh_error():
    assert issubclass(FrameTooLarge, CodecError)
    assert issubclass(CodecError, MeshError)


# --- corrupt frames --------------------------------------------------------------

def test_truncated_header():
    frame = encode({"a": 1})
    for cut in range(HEADER_SIZE):
        exc = assert_codec_error_only(frame[:cut])
        assert "header" in str(exc)


def test_truncated_body():
    frame = encode({"a": "b" * 50})
    for cut in range(HEADER_SIZE, len(frame)):
        assert_codec_error_only(frame[:cut])


def test_extra_trailing_bytes():
    frame = encode({"a": 1})
    exc = assert_codec_error_only(frame + b"\x00")
    assert "header says" in str(exc)


def test_wrong_magic():
    frame = bytearray(encode([1, 2, 3]))
    frame[0:2] = b"XX"
    exc = assert_codec_error_only(bytes(frame))
    assert "magic" in str(exc)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version(version):
    exc = assert_codec_error_only(frame_of(pack("hi"), version=version))
    assert "version" in str(exc)
    assert str(version) in str(exc)


@pytest.mark.parametrize("flags", [0x02, 0x04, 0x80, 0xFE])
def test_unknown_flags_on_plain_body(flags):
    exc = assert_codec_error_only(frame_of(pack({"a": 1}), flags=flags))
    assert "flags" in str(exc)


@pytest.mark.parametrize("extra", [0x02, 0x04, 0x80, 0xFE])
def test_unknown_flags_alongside_lz4_bit(extra):
    """An lz4 frame that also sets bits this node does not know must be refused."""
    body = lz4.block.compress(pack({"text": "abc" * 1000}), store_size=True)
    frame = frame_of(body, flags=FLAG_LZ4 | extra)
    assert decode(frame_of(body, flags=FLAG_LZ4)) == {"text": "abc" * 1000}  # sanity: valid as lz4
    assert_codec_error_only(frame)


def test_length_mismatch_both_ways():
    body = pack({"k": "v"})
    assert_codec_error_only(frame_of(body, length=len(body) + 1))
    assert_codec_error_only(frame_of(body, length=len(body) - 1))
    assert_codec_error_only(frame_of(body, length=0))


def test_checksum_mismatch():
    body = pack({"k": "v"})
    exc = assert_codec_error_only(frame_of(body, crc=frame_checksum(VERSION, 0, body) ^ 1))
    assert "checksum" in str(exc)


def test_valid_frame_with_invalid_msgpack_body():
    for body in [b"", b"\xc1", b"\x01\x02", b"\x92\x01", b"\xd9\x05ab"]:
        exc = assert_codec_error_only(frame_of(body))
        assert "msgpack" in str(exc)


def test_lz4_body_that_does_not_decompress():
    body = (100).to_bytes(4, "little") + b"\xff" * 20
    exc = assert_codec_error_only(frame_of(body, flags=FLAG_LZ4))
    assert "decompress" in str(exc)


def test_lz4_body_shorter_than_its_size_prefix():
    for body in [b"", b"\x01", b"\x01\x02\x03"]:
        assert_codec_error_only(frame_of(body, flags=FLAG_LZ4))


def test_lz4_body_with_wrong_size_prefix():
    raw = pack({"text": "abc" * 1000})
    body = lz4.block.compress(raw, store_size=True)
    wrong = (len(raw) + 7).to_bytes(4, "little") + body[4:]
    assert_codec_error_only(frame_of(wrong, flags=FLAG_LZ4))
    zero = (0).to_bytes(4, "little") + body[4:]
    assert_codec_error_only(frame_of(zero, flags=FLAG_LZ4))


def _corrupt(frame: bytes, index: int, xor: int) -> bytes:
    corrupted = bytearray(frame)
    corrupted[index] ^= xor
    return bytes(corrupted)


@given(sized_values, st.data())
def test_any_byte_flip_outside_flags_is_detected(value, data):
    """Magic, version, crc, length and body are all checked: a flip there never slips through."""
    frame = encode(value)
    index = data.draw(st.integers(0, len(frame) - 1).filter(lambda i: i != FLAGS_OFFSET), label="index")
    xor = data.draw(st.integers(1, 255), label="xor")
    assert_codec_error_only(_corrupt(frame, index, xor))


@given(sized_values, st.integers(1, 255))
def test_any_flags_byte_flip_is_detected(value, xor):
    frame = encode(value)
    assert_codec_error_only(_corrupt(frame, FLAGS_OFFSET, xor))


def _plain_frame_that_also_parses_as_lz4() -> tuple[bytes, bytes]:
    """An uncompressed frame whose msgpack body happens to be a valid lz4 block too.

    The value is ``b"\\x00" + block``: msgpack writes it as ``c5 <len u16> 00 block...``,
    which read as an lz4 body is "decompressed size = 0xc5 | len_hi << 8 | len_lo << 16"
    followed by ``block``; ``block`` is chosen so that it inflates to exactly that
    size and to valid msgpack.
    """
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(64))
    for hi in range(2, 16):
        size = 0xC5 + 256 * hi  # len = 256*hi, so len_lo = 0
        wanted = 256 * hi - 1  # len(b"\x00" + block) == 256*hi
        for r in range(max(0, size - 400), size - 3):
            inflated = msgpack.packb(noise[:r] + bytes(size - 3 - r), use_bin_type=True)
            block = lz4.block.compress(inflated, store_size=False)
            if len(block) == wanted:
                value = b"\x00" + block
                return encode(value, CodecLimits(compression_enabled=False)), value
            if len(block) > wanted:
                break
    raise AssertionError("could not build the example")  # pragma: no cover


def test_flags_flip_on_plain_frame_cannot_turn_it_into_another_valid_value():
    frame, value = _plain_frame_that_also_parses_as_lz4()
    assert frame[FLAGS_OFFSET] == 0
    assert decode(frame) == value
    # one bit flipped in the flags byte, crc and length untouched
    assert_codec_error_only(_corrupt(frame, FLAGS_OFFSET, FLAG_LZ4))


@given(sized_values, st.data())
def test_truncation_anywhere_is_detected(value, data):
    frame = encode(value)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    assert_codec_error_only(frame[:cut])


@given(sized_values, st.binary(min_size=1, max_size=16))
def test_appended_bytes_are_detected(value, tail):
    assert_codec_error_only(encode(value) + tail)


@given(st.binary(max_size=200))
def test_random_garbage_raises_codec_error(garbage):
    assert_codec_error_only(garbage)


@given(st.binary(max_size=200))
def test_garbage_after_a_valid_magic_and_version_raises_codec_error(tail):
    assert_codec_error_only(MAGIC + bytes([VERSION]) + tail)


@given(st.binary(max_size=200), st.sampled_from([0, FLAG_LZ4]))
def test_garbage_body_with_valid_header_never_escapes_as_another_error(body, flags):
    frame = frame_of(body, flags=flags)
    try:
        decode(frame)
    except CodecError:
        pass


@given(st.binary(max_size=64))
def test_unpack_garbage_raises_codec_error_only(data):
    try:
        unpack(data)
    except CodecError:
        pass


# --- oversize frames on decode ---------------------------------------------------

def test_decode_refuses_header_length_over_limit():
    limits = CodecLimits(max_frame_bytes=100)
    body = pack(b"x" * 150)
    with pytest.raises(FrameTooLarge):
        decode(frame_of(body), limits)
    # the declared length alone is enough: the body need not even be there
    with pytest.raises(FrameTooLarge):
        decode(HEADER.pack(MAGIC, VERSION, 0, 0, 2**32 - 1))


def test_decode_checks_limit_of_the_reader():
    frame = encode(b"y" * 500, CodecLimits(compression_enabled=False))
    assert decode(frame) == b"y" * 500
    with pytest.raises(FrameTooLarge):
        decode(frame, CodecLimits(max_frame_bytes=200))


@pytest.mark.parametrize("claimed", [DEFAULT_LIMITS.max_frame_bytes + 1, 2**31 - 1])
def test_lz4_body_claiming_a_huge_decompressed_size(claimed, monkeypatch):
    """A small, well-checksummed lz4 body that says it inflates to more than the limit."""
    real = lz4.block.compress(pack("abc" * 100), store_size=False)
    body = struct.pack("<i", claimed) + real
    frame = frame_of(body, flags=FLAG_LZ4)
    assert len(frame) < 1000

    def must_not_decompress(*args, **kwargs):  # pragma: no cover - reached only on a bug
        raise AssertionError("decompressed before checking the size")

    monkeypatch.setattr(codec.lz4.block, "decompress", must_not_decompress)
    with pytest.raises(FrameTooLarge) as info:
        decode(frame)
    assert str(claimed) in str(info.value)


def test_lz4_body_with_negative_size_prefix():
    body = struct.pack("<i", -1) + b"\x00" * 8
    with pytest.raises(FrameTooLarge):
        decode(frame_of(body, flags=FLAG_LZ4))


def test_lz4_size_limit_follows_reader_limits():
    raw = pack("z" * 5000)
    body = lz4.block.compress(raw, store_size=True)
    frame = frame_of(body, flags=FLAG_LZ4)
    assert decode(frame) == "z" * 5000
    with pytest.raises(FrameTooLarge):
        decode(frame, CodecLimits(max_frame_bytes=len(raw) - 1))
    assert decode(frame, CodecLimits(max_frame_bytes=len(raw))) == "z" * 5000
