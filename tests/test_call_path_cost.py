"""The recorded call path (issue 9's benchmarks): what recording adds to a call, and that the
faster forms keep recording what the slower ones did.

The in-process fast path hands a completed call to the sink's recorder in one frame (its
``inline`` form, with the logic's inputs given directly instead of through the train phase's
thread-local); a function the sink does not record pays nothing for the sink listening.
"""

from __future__ import annotations

import threading
import time

from learn_helpers import detector_source, learn_env, module_dir  # noqa: F401


def _cpu_ns_per_call(function, args, calls: int = 2000, rounds: int = 5) -> float:
    """The fastest of ``rounds`` runs, in CPU time of this thread (neighbours' load counts less)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time_ns()
        for _ in range(calls):
            function(*args)
        best = min(best, (time.thread_time_ns() - started) / calls)
    return best


def test_a_function_the_sink_does_not_record_pays_nothing_for_it_listening(learn_env, module_dir):
    # Before: every call of ``plain`` built an ExecutionRecord for the bus once ``detect`` had
    # started the sink (about five times the call); the sink then dropped it.
    mod = module_dir("costmod", detector_source())
    mod.plain(0.2)
    alone = _cpu_ns_per_call(mod.plain, (0.2,))
    mod.detect(0.2)  # an objective: the sink registers it and listens on the bus
    from poet_runtime import events
    from poet_runtime.learn import sink

    assert events.has_listeners() and sink.registered("costmod:plain") is None
    beside = min(_cpu_ns_per_call(mod.plain, (0.2,)), _cpu_ns_per_call(mod.plain, (0.2,)))
    alone = min(alone, _cpu_ns_per_call(mod.plain, (0.2,)) if beside > 2 * alone else alone)
    assert beside < 2 * alone, (alone, beside)
    # Its fallbacks and last_execution() are as before.
    import poet_runtime

    assert mod.plain(0.7) == {"drift_detected": True, "score": 0.7}
    record = poet_runtime.last_execution()
    assert record.function == "costmod:plain" and record.status == "ok" and not record.fell_back


def test_each_thread_remembers_the_inputs_its_logic_got(learn_env, module_dir):
    """The recorder keeps recent calls' inputs for replay: per call, the (args, kwargs) the logic
    got (after perceive's repairs), paired with that call's execution id, whatever other threads
    call meanwhile."""
    import poet_runtime
    from poet_runtime.learn import sink

    mod = module_dir("costmod2", detector_source())
    mod.detect(0.5)
    state = mod.detect.__poet__
    info = sink.registered("costmod2:detect")
    assert info is not None and info.inputs is not None
    state.loaded.enhancement.namespace["PARAMS"]["threshold"] = 0.3  # perceive now repairs the default
    seen: dict = {}
    errors: list = []

    def caller(offset: float) -> None:
        try:
            for i in range(300):
                score = offset + i / 10_000
                mod.detect(score) if i % 2 else mod.detect(score, 0.6)
                seen[poet_runtime.last_execution().execution_id] = (score, i % 2)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(offset,)) for offset in (0.1, 0.5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(seen) == 600
    for execution_id, (score, defaulted) in seen.items():
        kept = sink.remembered_inputs(info, execution_id)
        if kept is None:
            continue  # older than the memory's bound
        expected = ((score, 0.3), {}) if defaulted else ((score, 0.6), {})
        assert kept == expected, (execution_id, kept, expected)
    assert sum(sink.remembered_inputs(info, e) is not None for e in seen) >= 100
