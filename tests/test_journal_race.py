"""A reader listing pending/ while feedback files are written never sees one empty or half written.

Why: the fleet publisher scans pending/ from its own thread while ``feedback()`` writes; when
``journal.write_single`` created the file (O_EXCL) and then wrote it, a scan between the two saw
an empty ``fb-`` file, marked it done and never forwarded that feedback (commit 33ccd56). This
test races a real writer thread against a real reader thread on a real folder.
"""

from __future__ import annotations

import os
import threading

from poet_runtime import journal

FILES = 2000


def _line(number: int) -> bytes:
    # Long enough that a torn write would show as a partial line, not just an empty file.
    line = journal.encode({"id": f"ev-race-{number}", "type": "feedback.received",
                           "payload": {"label": number, "pad": "x" * 200}}, 1 << 20)
    assert line is not None
    return line


def test_reader_never_sees_a_partial_feedback_file(tmp_path):
    root = tmp_path / "events"
    journal.ensure_dirs(root)
    pending = root / journal.PENDING
    done = threading.Event()
    seen: set[str] = set()
    wrong: list = []
    reads = [0]

    def reader():
        while True:
            finished = done.is_set()  # one full listing after the writer is done
            for entry in os.scandir(pending):
                name = entry.name
                if not (name.startswith("fb-") and name.endswith(".jsonl")) or name in seen:
                    continue  # what the publisher lists (a writer's temporary name is not), once, as it does
                try:
                    with open(entry.path, "rb") as source:
                        data = source.read()
                except FileNotFoundError:
                    continue
                reads[0] += 1
                seen.add(name)
                if journal.decode(data) is None:
                    wrong.append((name, data[:40]))
            if finished:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for number in range(FILES):
            journal.write_single(root, f"fb-ev-race-{number}.jsonl", _line(number))
    finally:
        done.set()
        thread.join()
    assert not wrong, f"{len(wrong)} of {reads[0]} reads saw an empty or partial file, e.g. {wrong[:3]}"
    assert len(seen) == FILES  # the reader did look at every file
    assert sorted(os.listdir(pending)) == sorted(f"fb-ev-race-{n}.jsonl" for n in range(FILES))  # no temp left
