"""Escape payloads through a tampered store, the way an attacker delivers them.

A stored version's ``code.py`` is replaced by one whose ``operate_prime`` starts with a
payload of ``tests/escapes`` (one of each class of issue 13, items 1, 5 and 6). Under a
policy that sandboxes it (the default's limits, trusting no generator), the program
gets the original's answer, the fallback is recorded and emitted, and nothing the
payload tried happened. Then the very same tampered version is accepted (signed, as a
reviewer who missed it would) and run under ``trusted`` (backend ``none``): the payload
does what it tries there, so its containment above means something.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import poet_runtime
from poet_runtime import events
from poet_runtime.safe_text import hidden_characters
from poet_runtime.store import FunctionStore
from sandbox_helpers import REPO_ESCAPES, escape_header, fill

GREET = '''\
from poet_runtime import poet


@poet
def greet(name: str) -> str:
    return "hello " + name
'''
SANDBOXED = '''\
version = 1
[defaults]
backend = "restricted"
wall_ms = 2000
cpu_ms = 1000
memory_mb = 256
max_output_kb = 64
imports = ["math", "statistics", "json", "re", "datetime", "collections", "itertools", "functools", "decimal",
           "fractions", "random", "time", "heapq", "bisect", "numbers"]
trust = []
'''
# One payload of each class (files are in tests/escapes; all of them run in the escape tests).
PAYLOADS = [
    "101_update_wrapper_globals", "104_singledispatch_annotation", "122_facility_driver_code_replace",
    "123_type_of_function_constructs", "124_type_of_type_three_arguments", "130_decimal_snan",
    "131_decimal_huge_exponent", "138_result_not_annotated_type", "140_control_characters_in_detail",
]
# Forged exceptions (134-137) are not here: unsandboxed, the call path itself (enhanced.py) turns an
# exception that is not the logic's into a fallback, so only a backend shows them reaching its caller
# (test_containment_trusted.py runs them on backend none; the escape tests show them contained).
SIGNATURE = "def operate_prime(logic, args, kwargs):\n"


def _tamper(code: Path, body: str) -> None:
    text = code.read_text()
    assert SIGNATURE in text
    code.write_text(text.replace(SIGNATURE, SIGNATURE + textwrap.indent(body, "    ") + "\n", 1))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_tampered_version_is_contained_and_its_payload_works_when_trusted(payload, poet_home, write_module,
                                                                           monkeypatch, tmp_path):
    path = REPO_ESCAPES / f"{payload}.py"
    effect = escape_header(path.read_text())["effect"]
    policy = tmp_path / "sandboxed.toml"
    policy.write_text(SANDBOXED)
    monkeypatch.setenv("POET_POLICY", str(policy))
    name = f"greet_{payload[:3]}"
    module = write_module(name, GREET)
    assert module.greet("ann") == "hello ann"
    store = FunctionStore(poet_home / f"{name}.greet", f"{name}:greet")
    version = store.current()
    marker = tmp_path / "escaped"
    _tamper(version.path / "code.py", fill(path.read_text(), marker=marker, secret_path="/nonexistent", port=1))

    seen = []
    unsubscribe = events.subscribe(seen.append)
    try:
        module = write_module(name, GREET)
        assert module.greet("bob") == "hello bob"  # the original's answer
    finally:
        unsubscribe()
    record = poet_runtime.last_execution()
    assert record.fell_back and record.backend in ("restricted", None), record  # None: refused at load
    assert any(event["type"] == "function.fallback" and event["reason"] == record.reason for event in seen)
    assert not marker.exists()
    assert not hidden_characters(f"{record.reason} {record.detail}"), record.detail

    # The same code, accepted by a reviewer and run unsandboxed: it does what it tries.
    store.accept(version.number)
    monkeypatch.setenv("POET_POLICY", "trusted")
    module = write_module(name, GREET)
    if effect == "marker":
        module.greet("cy")
        assert marker.exists(), "the payload did nothing unsandboxed"
    elif effect == "forged-result":
        try:
            answer = module.greet("cy")
        except BaseException as error:  # noqa: B902 - SystemExit, CircuitOpenError: what the caller would get
            answer = error
        assert poet_runtime.last_execution().backend == "none"
        assert not (isinstance(answer, str) and answer == "hello cy"), "the payload changed nothing unsandboxed"
    elif effect == "forged-log":
        module.greet("cy")
        record = poet_runtime.last_execution()
        assert record.backend == "none" and record.fell_back
        assert hidden_characters(record.detail or ""), "the payload's text reached the record raw unsandboxed"
