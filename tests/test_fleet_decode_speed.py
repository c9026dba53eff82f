"""The learner's per-entry speed-ups answer exactly as the plain code would.

``journal.loads`` may take orjson's answer only where it is ``json.loads``'s own (value, type,
float sign, key order; or the same exception); ``wire.sign_entry`` / ``verify_entry`` must sign
the documented format-3 bytes, rebuilt here from the layout without the module's helpers.
hypothesis is not in the venv: the inputs are generated from fixed seeds instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import struct

import pytest

from poet_runtime import journal
from poet_runtime.fleet import wire

orjson = pytest.importorskip("orjson")


# -- journal.loads == json.loads ---------------------------------------------------------------

def _outcome(function, data):
    try:
        return "ok", function(data)
    except RecursionError as error:
        return RecursionError, str(error)
    except Exception as error:  # the class and its words: loads says what json.loads says
        return type(error), str(error)


def _same(a, b) -> bool:
    """Equal and of the same types all the way down (1 is not 1.0, -0.0 is not 0.0, key order
    counts, NaN equals NaN); iterative, for values nested hundreds deep."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if type(x) is float:
            if struct.pack("<d", x) != struct.pack("<d", y) and not (x != x and y != y):
                return False
        elif type(x) is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is dict:
            if list(x) != list(y):
                return False
            stack.extend(zip(x.values(), y.values()))
        elif x != y:
            return False
    return True


def _check(data: bytes) -> None:
    want, got = _outcome(json.loads, data), _outcome(journal.loads, data)
    if want[0] == "ok":
        assert got[0] == "ok" and _same(got[1], want[1]), (data[:200], got, want)
    else:
        assert got == want, (data[:200], got, want)


HAND = [
    # integers at and past 64 bits (orjson would give floats), and -0 (an int, not -0.0)
    b"[9223372036854775807]", b"[9223372036854775808]", b"[-9223372036854775808]", b"[-9223372036854775809]",
    b"[18446744073709551615]", b"[18446744073709551616]", b"[-18446744073709551616]", b"[" + b"9" * 40 + b"]",
    b'{"n":123456789012345678901234567890}', b"[" + b"1" * 5000 + b"]", b"[-0]", b"[0]", b"[-0.0]", b"[-0e0]",
    b"[-0E-0]", b"[0e0]", b"[0.0]", b"[123456789012345678]", b"[-123456789012345678]",
    b"[1234567890123456789]", b"[0.1234567890123456789]", b"[1.5e1234567890123456789]",
    # NaN, infinities, and numbers that round to infinity or to zero
    b"[NaN]", b"[-NaN]", b"[Infinity]", b"[-Infinity]", b'{"a":NaN}', b"[nan]", b"[inf]",
    b"[1e400]", b"[-1e400]", b"[1e309]", b"[1.7976931348623157e308]", b"[1.7976931348623159e308]",
    b"[1e-400]", b"[-1e-400]", b"[4.9e-324]", b"[2e-324]", b"[2.4703282292062328e-324]",
    b"[2.2250738585072011e-308]", b"[2.2250738585072014e-308]", b"[1e999999999999999999]",
    b"[0.1000000000000000055511151231257827021181583404541015625000001]", b"[9007199254740993]",
    b"[9007199254740993.0]", b"[1" + b"0" * 308 + b".0]", b"[1" + b"0" * 309 + b".0]",
    # strings: surrogates escaped and raw, invalid UTF-8, control characters, escapes
    b'["\\ud800"]', b'["\\udc00"]', b'["\\udc00\\ud800"]', b'["\\ud83d\\ude00"]', b'["\\uD800\\u0041"]',
    b'{"\\ud800":1}', b'["\xed\xa0\x80"]', b'["\xed\xb0\x80"]', b'["\xf0\x9f\x98\x80"]', b'["\xff"]',
    b'["\xc0\xaf"]', b'["\xe0\x80\xaf"]', b'["\xf4\x90\x80\x80"]', b'["\xc3"]', b'{"a":"\x80"}', b'["\xef\xbb\xbf"]',
    b'["a\tb"]', b'["\x00"]', b'["\x1f"]', b'["\x7f"]', b'["\\u0000"]', b'["\\/"]', b'["\\x41"]', b'["\\u12"]',
    b'["\\a"]', b'["\xc2\x85"]', b'["\xe2\x80\xa8"]',
    # duplicate keys: the last value, at the first key's place
    b'{"a":1,"a":2}', b'{"b":1,"a":2,"b":3}', b'{"a":{"x":1},"a":[2]}',
    # whitespace json allows (space, tab, CR, LF) and what it does not; a BOM; NUL after the opener
    b"[1] \t\r\n", b"[ 1 , 2 ]", b"{ \"a\" : 1 }", b"[1]\x0c", b"[\x0b1]", b"[\xc2\xa01]", b"[1]\x00", b"[1]\xef\xbb\xbf",
    b"\xef\xbb\xbf[1]", b"{\x00", b"[\x00", b"[\x00]\x00", b"{", b"[", b"{}", b"[]", b"{}x", b"[] []",
    # malformed numbers and documents
    b"[1.]", b"[01]", b"[.5]", b"[+1]", b"[1,]", b'{"a":1,}', b"[1]//", b"[tru]", b"[True]", b"[1e]", b"[1e+]",
    b"[-]", b"[--1]", b"[0x10]", b'{"a"}', b'{1:2}', b"[1 2]", b"['a']", b"[1]]", b"[[1]",
]


@pytest.mark.parametrize("data", HAND, ids=lambda data: repr(data[:40]))
def test_hand_cases(data):
    _check(data)


@pytest.mark.parametrize("depth", [1, 2, 50, 99, journal._DEEP - 1, journal._DEEP, journal._DEEP + 1, 500,
                                   900, 990, 1023, 1024, 1025, 5000, 100_000])
@pytest.mark.parametrize("opener", ["[]", "{}", "mixed"])
def test_deep_nesting(depth, opener):
    if opener == "[]":
        data = b"[" * depth + b"]" * depth
    elif opener == "{}":
        data = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
    else:
        data = b'[{"a":' * (depth // 2) + b"1" + b"}]" * (depth // 2)
    _check(data)
    _check(data.replace(b"]", b"] ", 1))  # shallow on one side only


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 6 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randrange(-1000, 1000), rng.randrange(-2 ** 70, 2 ** 70),
                           2 ** 63 + rng.randrange(-3, 3), -(2 ** 63) + rng.randrange(-3, 3),
                           2 ** 64 + rng.randrange(-3, 3), rng.randrange(10 ** 17, 10 ** 20)])
    if kind == 2:
        return rng.choice([rng.random(), rng.uniform(-1e300, 1e300), rng.random() * 10.0 ** rng.randrange(-330, 308),
                           struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0], -0.0, 0.0])
    if kind in (3, 4, 5):
        alphabet = "ab \"\\/\t\n\x00\x1f\x7f\u00e9\u2028\ud800\udfff\U0001f600"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    # few distinct keys: duplicates come up (json.dumps writes each once; the mutations repeat some)
    return {"".join(rng.choice("ab\ud800\u00e9") for _ in range(2)): _value(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def _documents(rng: random.Random):
    """Text json.dumps writes (NaN and lone surrogates included), one value in a list or dict."""
    value = _value(rng)
    value = value if type(value) in (list, dict) else [value]
    ascii_ = rng.random() < 0.5
    text = json.dumps(value, ensure_ascii=ascii_, separators=rng.choice([(",", ":"), (", ", ": ")]))
    return text.encode("utf-8", "surrogatepass")


def _number(rng: random.Random) -> bytes:
    """A number as text, in forms orjson and json might parse differently: long mantissas,
    halfway cases, subnormals, huge exponents, long integers."""
    sign = rng.choice(["", "", "-"])
    whole = rng.choice(["0", str(rng.randrange(1, 10)) + "".join(rng.choice("0123456789")
                                                                 for _ in range(rng.randrange(30)))])
    frac = rng.choice(["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 40)))])
    exp = rng.choice(["", "", f"e{rng.randrange(-400, 400)}", f"E+{rng.randrange(400)}", f"e-{rng.randrange(340)}"])
    if rng.random() < 0.2:  # exactly a double, or halfway between two, written out long
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if x == x and x not in (float("inf"), float("-inf")):
            return ("%.40e" % x).encode() if rng.random() < 0.5 else repr(x).encode()
    return (sign + whole + frac + exp).encode()


def _mutated(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few bytes changed, added or removed: malformed text, invalid UTF-8."""
    data = bytearray(data)
    specials = b'\x00\x0b\x0c\x1f\x7f\x80\xbf\xc0\xc3\xed\xa0\xef\xbb\xf4\xff "\\[]{}:,-+.eE0159nNIatfu'
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data) + 1)
        op = rng.randrange(3)
        if op == 0 and at < len(data):
            data[at] = rng.choice(specials)
        elif op == 1:
            data[at:at] = bytes([rng.choice(specials)])
        elif at < len(data) and at > 0:
            del data[at]
    return bytes(data)


def test_generated_documents():
    rng = random.Random(20261202)
    for _ in range(3000):
        data = _documents(rng)
        _check(data)
        _check(_mutated(rng, data))


def test_generated_numbers():
    rng = random.Random(7)
    for _ in range(5000):
        number = _number(rng)
        _check(b"[" + number + b"]")
        _check(b'{"n":' + number + b',"m":[' + _number(rng) + b"]}")


def test_generated_feedback_lines():
    """What the learner decodes most: a feedback event and an execution, with other numbers."""
    rng = random.Random(11)
    for n in range(2000):
        event = {"id": f"ev-{rng.getrandbits(48):012x}-{n}", "type": "function.feedback",
                 "timestamp": rng.random() * 2e9, "correlation_id": None, "metadata": {},
                 "payload": {"function": "app:f", "version": rng.randrange(1, 10 ** rng.randrange(1, 22)),
                             "execution_id": f"{n}", "label": rng.choice([True, False, rng.random(), -0.0])}}
        data = json.dumps(event).encode()
        _check(data)
        _check(_mutated(rng, data))


def test_without_orjson_same_answers(monkeypatch):
    """The [fleet] extra is optional: without orjson loads is the plain path, same answers."""
    monkeypatch.setattr(journal, "_orjson_loads", None)
    for data in HAND[:40]:
        _check(data)


def test_orjson_answers_the_plain_case(monkeypatch):
    """The speed-up is used where it may be (else this file would pass on the plain path alone)."""
    calls = []

    def counted(data):
        calls.append(data)
        return orjson.loads(data)

    monkeypatch.setattr(journal, "_orjson_loads", counted)
    line = journal.encode({"id": "ev-1", "timestamp": 1764694466.123456, "payload": {"label": True}}, 1 << 20)
    assert journal.decode(line) == {"id": "ev-1", "timestamp": 1764694466.123456, "payload": {"label": True}}
    assert journal.loads(b'{"a":[1,2.5,null]}') == {"a": [1, 2.5, None]}
    assert len(calls) == 2
    calls.clear()
    assert journal.loads(b"[18446744073709551616]") == [18446744073709551616]  # never asked: a float there
    assert journal.loads(b"[" * journal._DEEP + b"]" * journal._DEEP) is not None
    assert calls == []


# -- format-3 signatures, from the documented layout ----------------------------------------

FIELDS = ("k", "d", "p", "h", "i", "o", "m", "x")  # the documented order, written out, not wire's tuple


def _reference_mac(key: bytes, stamp: bytes, entry: dict) -> bytes:
    """``poet-entry 3\\n``, the stamp, then per field ``\\n<name>`` and ``-`` (absent) or
    ``<length>:<bytes>``; HMAC-SHA256 in hex."""
    message = b"poet-entry 3\n" + stamp
    for name in FIELDS:
        value = entry.get(name.encode(), entry.get(name))
        if value is None:
            message += b"\n" + name.encode() + b"-"
        else:
            if isinstance(value, str):
                value = value.encode()
            elif type(value) is int:
                value = str(value).encode()
            message += b"\n" + name.encode() + str(len(value)).encode() + b":" + bytes(value)
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode()


def _entries(rng: random.Random):
    pool = [b"", b"-", b"0", b"1:", b"\n", b"\nk-", b"fb", b"ex", b"x" * 300, bytes(range(256)),
            "h\u00e9", 0, 12345, -7, "", b"\xff\xfe"]
    for _ in range(400):
        entry = {}
        for name in FIELDS:
            if rng.random() < 0.6:
                entry[name] = rng.choice(pool) if rng.random() < 0.7 else rng.randbytes(rng.randrange(40))
        entry.setdefault("k", b"fb")
        yield entry


def test_sign_entry_signs_the_documented_bytes():
    rng = random.Random(3)
    # a SHA-256 block is 64 bytes: a key longer than that is hashed first, a shorter one padded
    for key in (b"k" * 32, b"another key", b"\x00" * 70, b"x" * 64, b"y" * 65, bytes(range(200))):
        for entry in _entries(rng):
            signature = wire.sign_entry(key, entry)
            head, stamp, mac = signature[:2], signature[2:-65], signature[-64:]
            assert head == b"3." and signature[-65:-64] == b"."
            assert mac == _reference_mac(key, stamp, entry), entry
            read = {name.encode(): wire._as_bytes(value) for name, value in entry.items()}
            read[b"s"] = signature
            assert wire.verify_entry(key, read)
            assert wire.check_entry(key, read)[1] is None
            assert wire.check_entry(key, read)[0].text().encode() == stamp


def test_verify_entry_takes_the_reference_signature_and_refuses_any_change():
    rng = random.Random(5)
    key = b"fleet key"
    for entry in _entries(rng):
        stamp = b"1764694466123.00ff00ff00ff00ff.42"
        read = {name.encode(): wire._as_bytes(value) for name, value in entry.items()}
        read[b"s"] = b"3." + stamp + b"." + _reference_mac(key, stamp, entry)
        assert wire.verify_entry(key, read), entry
        assert not wire.verify_entry(b"other key", read)
        name = rng.choice(FIELDS).encode()
        changed = dict(read)
        if changed.get(name) is None:
            changed[name] = b""  # absent is not empty
        elif rng.random() < 0.5:
            del changed[name]
        else:
            changed[name] = changed[name] + b"."
        assert not wire.verify_entry(key, changed)
        assert wire.check_entry(key, changed) == (None, wire.ENTRY_BAD)
        moved = dict(read)
        moved[b"s"] = b"3." + stamp[:-1] + b"3." + read[b"s"][-64:]  # another stamp, same HMAC
        assert wire.check_entry(key, moved) == (None, wire.ENTRY_BAD)


def test_caller_dict_with_text_names_and_values_verifies():
    key = b"k" * 32
    entry = {"k": "fb", "d": "line\n", "p": "a" * 12, "i": 42}
    signature = wire.sign_entry(key, entry)
    assert wire.verify_entry(key, {**{n.encode(): v for n, v in entry.items()}, b"s": signature})
    assert wire.check_entry(key, {b"k": b"fb", b"d": 1.5, b"s": signature}) == (
        None, "malformed entry (an events entry's field is bytes, str or int, not float)")


@pytest.mark.parametrize("signature, why", [
    (None, "unsigned"), (b"", "unsigned"),
    (b"2.1.ab.1." + b"0" * 64, wire.OLD_ENTRY), (b"0" * 64, wire.OLD_ENTRY),
    (b"4.1.ab.1." + b"0" * 64, "another wire format (this reader takes events entries of format 3 only; "
                               "upgrade the reader)"),
    (b"nonsense", "malformed signature (not a poet wire signature)"),
    (b"3.1.ab.1." + b"0" * 64, wire.ENTRY_BAD),
    (b"3.1.AB.1." + b"0" * 64, "another wire format (this reader takes events entries of format 3 only; "
                               "upgrade the reader)"),  # as worded before: a head of digits is a format
])
def test_refusal_words(signature, why):
    fields = {b"k": b"fb", b"d": b"x\n"}
    if signature is not None:
        fields[b"s"] = signature
    assert wire.check_entry(b"key", fields) == (None, why)
    assert not wire.verify_entry(b"key", fields)
    assert wire.check_entry(None, fields)[1].startswith("no key held")
