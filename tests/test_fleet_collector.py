"""A learner process tunes the garbage collector (``learner.tune_collector``), in its own process only."""

from __future__ import annotations

import gc
import subprocess
import sys


def test_tune_collector_freezes_startup_objects_and_collects_young_ones_less_often():
    script = ("import gc; from poet_runtime.fleet import learner; before = gc.get_threshold(); "
              "learner.tune_collector(); print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], "
              "gc.get_freeze_count() > 1000, gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    from poet_runtime.fleet.learner import GC_YOUNG

    before, after, *rest = out.stdout.split()
    assert int(before) < GC_YOUNG and int(after) == GC_YOUNG and rest == ["True", "True", "True"], out.stdout
    assert gc.get_threshold()[0] != GC_YOUNG  # importing the module changes nothing: only the learn command tunes
