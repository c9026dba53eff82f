"""Damaged event files (issue 12, item 6): a damaged line costs that line (or its batch), never
the segment. Real segments written by the real sink; bits flipped on disk as a bad disk would.
"""

from __future__ import annotations

import pytest

from learn_helpers import detector_source, events_of, learn_env, module_dir  # noqa: F401
from poet_runtime import journal


@pytest.fixture
def segment(learn_env, module_dir):
    """221 executions in 12 batches (flushed every 20 calls) in one execution segment."""
    import poet_runtime
    from poet_runtime.learn import sink

    module = module_dir("dmg_events", detector_source())
    ids = []
    for i in range(221):
        module.detect(i / 1000.0)
        ids.append(poet_runtime.last_execution().execution_id)
        if i % 20 == 19:
            sink.flush()
    sink.shutdown()  # closes the segment (moved to processed/)
    paths = [p for p in journal.files(journal.events_root(learn_env)) if p.name.startswith("ex-")]
    assert len(paths) == 1
    return learn_env, paths[0], ids


def _flip(path, offset: int, bit: int = 0x04) -> bytes:
    data = bytearray(path.read_bytes())
    original = bytes(data)
    data[offset] ^= bit
    path.write_bytes(bytes(data))
    return original


def _executions(home) -> list[str]:
    return [e["correlation_id"] for e in events_of(home, "function.execution")]


def test_a_flipped_bit_anywhere_in_the_header_line_costs_no_execution(segment):
    home, path, ids = segment
    assert _executions(home) == ids
    header_end = path.read_bytes().index(b"\n")
    for offset in sorted({0, 3, 8, 9, 12, 20, 30, 40, header_end // 2, header_end - 2, header_end - 1}):
        original = _flip(path, offset)
        try:
            assert _executions(home) == ids, f"bit flipped at byte {offset} of the header"
        finally:
            path.write_bytes(original)


def test_a_flipped_bit_in_a_batch_costs_that_batch_only(segment):
    home, path, ids = segment
    data = path.read_bytes()
    lines = data.split(b"\n")
    third = sum(len(line) + 1 for line in lines[:3])  # the start of the third batch line
    _flip(path, third + len(lines[3]) // 2)
    found = _executions(home)
    assert found == ids[:40] + ids[60:]  # batch 3 (calls 40..59) is gone, nothing else
    assert journal.count_torn(journal.events_root(home)) == 1


def test_a_header_and_a_batch_both_damaged_cost_the_batch_only(segment):
    home, path, ids = segment
    _flip(path, 25)
    lines = path.read_bytes().split(b"\n")
    last = sum(len(line) + 1 for line in lines[:-2])  # the last batch line (the file ends with a newline)
    _flip(path, last + 15)
    assert _executions(home) == ids[:220]


def test_feedback_still_finds_an_execution_of_a_segment_whose_header_is_damaged(segment):
    import poet_runtime

    home, path, ids = segment
    _flip(path, 30)
    event_id = poet_runtime.feedback(ids[100], label=True)
    assert [e["payload"]["execution_id"] for e in events_of(home, "function.feedback")
            if e["id"] == event_id] == [ids[100]]
