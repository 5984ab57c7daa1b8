"""Byte rules of the PLC frame: pure functions, checked against hand-computed expectations."""

from __future__ import annotations

import base64
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.sinks.serial_frame import (
    CommandParser,
    apply_control,
    bcc_xor,
    build_frame,
    check_framing,
    reserved_bytes,
    result_payload,
    unescape,
)

STXETX = dict(prefix=b"\x02", suffix=b"\x03", separator=b",")


def test_default_frame_is_stx_payload_etx() -> None:
    assert build_frame([b"ABC-123"], **STXETX) == b"\x02ABC-123\x03"


def test_several_payloads_joined_by_separator() -> None:
    assert build_frame([b"A1", b"B2", b"C3"], **STXETX) == b"\x02A1,B2,C3\x03"


def test_xor_bcc_covers_body_and_suffix_and_follows_it() -> None:
    frame = build_frame([b"A1"], checksum="xor", **STXETX)
    # 'A' ^ '1' ^ ETX computed by hand: 0x41 ^ 0x31 = 0x70; 0x70 ^ 0x03 = 0x73
    assert frame == b"\x02A1\x03\x73"
    assert bcc_xor(b"A1\x03") == 0x73


def test_escape_policy_examples() -> None:
    res = reserved_bytes(b"\x02", b"\x03", b",")
    assert apply_control(b"a\x02b\x03c,d\\e\x1b[31m\x00\x7f", "escape", res) == \
        b"a\\x02b\\x03c\\x2cd\\\\e\\x1b[31m\\x00\\x7f"
    assert unescape(b"a\\x02b\\\\x41") == b"a\x02b\\x41"


def test_replace_and_strip_policies() -> None:
    res = reserved_bytes(b"\x02", b"\r\n", b";")
    assert apply_control(b"a\rb;c\x00d\xc3\xa9", "replace", res, b"?") == b"a?b?c?d\xc3\xa9"
    assert apply_control(b"a\rb;c\x00d\xc3\xa9", "strip", res) == b"abcd\xc3\xa9"


def test_framing_that_escape_sequences_would_collide_with_is_refused() -> None:
    with pytest.raises(ValueError, match="separator"):
        check_framing(b"\x02", b"\x03", b"x", "escape", b"?")
    with pytest.raises(ValueError, match="suffix"):
        check_framing(b"\x02", b"", b",", "escape", b"?")
    with pytest.raises(ValueError, match="replacement"):
        check_framing(b"\x02", b"\x03", b",", "replace", b",")
    check_framing(b"", b"\r\n", b";", "escape", b"?")  # a plain line protocol is fine


def test_result_payload_kinds() -> None:
    assert result_payload({"kind": "noread", "text": None}, b"NOREAD", "utf-8") == b"NOREAD"
    assert result_payload({"kind": "read", "text": "h\u00e9"}, b"NOREAD", "utf-8") == "h\u00e9".encode()
    raw = b"\xff\xfe\x02"
    r = {"kind": "read", "text": "\u00ff\u00fe\x02", "bytes_b64": base64.b64encode(raw).decode()}
    assert result_payload(r, b"NOREAD", "utf-8") == raw
    assert result_payload({"kind": "read", "text": "h\u00e9"}, b"X", "ascii") == b"h?"


FRAMINGS = [
    (b"\x02", b"\x03", b","),
    (b"", b"\r\n", b","),
    (b"", b"\r", b";"),
    (b"\x02", b"\x03", b"|"),
]


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(max_size=64), min_size=1, max_size=4),
       framing=st.sampled_from(FRAMINGS), checksum=st.sampled_from(["none", "xor"]))
def test_no_payload_can_break_framing_and_escape_is_lossless(payloads, framing, checksum) -> None:
    prefix, suffix, sep = framing
    frame = build_frame(payloads, prefix=prefix, suffix=suffix, separator=sep, checksum=checksum)
    if checksum == "xor":
        frame, bcc = frame[:-1], frame[-1]
        assert bcc == reduce(lambda a, b: a ^ b, frame[len(prefix):], 0)
    assert frame.startswith(prefix) and frame.endswith(suffix)
    body = frame[len(prefix):len(frame) - len(suffix)]
    framing_bytes = set(prefix) | set(suffix) | set(sep)
    # The body carries no framing byte and no control byte: exactly one prefix, one suffix.
    assert not any(b in framing_bytes or b < 0x20 or b == 0x7F for b in body.replace(sep, b""))
    if prefix:
        assert frame.count(prefix) == 1
    assert frame.count(suffix) == 1
    assert [unescape(p) for p in body.split(sep)] == payloads


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=64), policy=st.sampled_from(["replace", "strip"]))
def test_lossy_policies_still_keep_framing(payload, policy) -> None:
    res = reserved_bytes(b"\x02", b"\x03", b",")
    out = apply_control(payload, policy, res, b"?")
    assert not any(b in res for b in out)


def test_command_parser_line_endings_stx_etx_and_ack_nak() -> None:
    p = CommandParser()
    events = p.feed(b"LON\r\nLOFF\rLON\n\x02LOFF\x03\x06\x15 LON \r")
    assert events == [("cmd", "LON"), ("cmd", "LOFF"), ("cmd", "LON"), ("cmd", "LOFF"),
                      ("ack",), ("nak",), ("cmd", "LON")]


def test_command_parser_split_reads_and_noise() -> None:
    p = CommandParser(max_line=8)
    assert p.feed(b"LO") == []
    assert p.feed(b"N\r") == [("cmd", "LON")]
    assert p.feed(b"garbage-way-too-long\r") == []  # over max_line: discarded, not truncated
    assert p.feed(b"junk\x02LOFF\x03") == [("cmd", "LOFF")]  # STX resyncs
