"""A learner process tunes its interpreter (``learner.tune_interpreter``), in its own process only."""

from __future__ import annotations

import gc
import subprocess
import sys


def test_tune_interpreter_freezes_startup_objects_collects_young_ones_less_often_and_switches_less():
    script = ("import gc, sys; from poet_runtime.fleet import learner; before = gc.get_threshold(); "
              "learner.tune_interpreter(); print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], "
              "gc.get_freeze_count() > 1000, gc.isenabled(), sys.getswitchinterval())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    from poet_runtime.fleet.learner import GC_YOUNG, SWITCH_INTERVAL_S

    before, after, *rest, interval = out.stdout.split()
    assert int(before) < GC_YOUNG and int(after) == GC_YOUNG and rest == ["True", "True", "True"], out.stdout
    assert abs(float(interval) - SWITCH_INTERVAL_S) < 1e-6  # kept in microseconds
    # importing the module changes nothing here: only the learn command tunes
    assert gc.get_threshold()[0] != GC_YOUNG and sys.getswitchinterval() != SWITCH_INTERVAL_S
