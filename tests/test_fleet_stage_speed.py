"""The stage step's speed-ups must not change a value: ``journal.loads`` (json.loads without the
encoding guess for plain UTF-8) against ``json.loads`` itself, byte strings chosen where the guess
matters, and ``Stamp.parse`` with its compiled pattern against what it took before."""

import json

import pytest

from poet_runtime import journal
from poet_runtime.fleet import wire

SAMPLES = [
    b'{"a": 1}', b"[1, 2]", b"{}", b"[]", b"{", b"[", b'"x"', b"1", b" {}", b"\xef\xbb\xbf{}",
    '{"a": "\u00e9"}'.encode("utf-16-le"), '{"a": 1}'.encode("utf-16-be"), '{"a": 1}'.encode("utf-16"),
    '[1]'.encode("utf-32-le"), '[1]'.encode("utf-32"), b"{\x00", b"[\x00\x00\x00", b"{\x00}\x00",
    b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}', b'["\xe2\x82\xac"]', b'{"a": NaN}', b"{} x", b"[1]\n",
    b"{" * 3000 + b"}" * 3000,
]


def _outcome(call, data):
    try:
        value = call(data)
    except Exception as error:  # the very exception type is part of the behaviour kept
        return ("error", type(error))
    return ("value", repr(value))


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_loads_is_json_loads(data):
    assert _outcome(journal.loads, data) == _outcome(json.loads, data)
    assert _outcome(journal.loads, bytearray(data)) == _outcome(json.loads, bytearray(data))


def test_decode_of_a_journal_line_is_unchanged():
    line = journal.encode({"id": "e1", "payload": {"label": True, "text": "\u00e9\u20ac"}}, 1 << 20)
    assert journal.decode(line) == json.loads(line[9:-1].decode())
    assert journal.decode(line[:-2] + b"x\n") is None  # crc no longer holds


def test_unsigned_json_keeps_what_it_took():
    assert wire.unsigned_json(b'{"execution_id": "a-1"}') == {"execution_id": "a-1"}
    assert wire.unsigned_json('{"a": 1}'.encode("utf-16")) == {"a": 1}  # still guessed as before
    assert wire.unsigned_json(b"[1]") is None and wire.unsigned_json(b"{") is None
    assert wire.unsigned_json(b"[" * 100_000 + b"]" * 100_000) is None  # too deep: None, not an error


def test_stamp_parse():
    assert wire.Stamp.parse("1700000000000.0a1f.7") == wire.Stamp(1700000000000, "0a1f", 7)
    assert wire.Stamp.parse(b"12.ab.3") == wire.Stamp(12, "ab", 3)
    stamp = wire.Stamp(1700000000000, "f" * 32, 10**18)
    assert wire.Stamp.parse(stamp.text()) == stamp
    for bad in ("", "1.ab", "1..3", "1.AB.3", "1.ab.3.", ".ab.3", "1" * 16 + ".ab.3", "1." + "a" * 33 + ".3",
                "1.ab." + "3" * 20, "1.ab.-3", " 1.ab.3", "1.ab.3\n", "\u00b2.ab.3", "1.ab.\u0663", None, 5):
        assert wire.Stamp.parse(bad) is None, bad  # "\u00b2" (superscript two) raised ValueError before
