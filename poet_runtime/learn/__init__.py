"""Learning: durable events, feedback, one learner per objective, regeneration when it degrades.

The call path knows nothing of this package except ``attach(state)``, called after a
version is loaded. For a function without an objective (and ``POET_EVENTS`` unset) it
returns at once: no listener, no files, no cost. Otherwise it registers the function
with the event sink (which subscribes to the in-process bus) and, with an objective,
gives it a ``Learning`` engine that first catches up on feedback left pending by earlier
processes. Nothing here imports pydantic; ``models`` does, and only feedback and the
``events`` command import it.
"""

from __future__ import annotations

from pathlib import Path

from poet_runtime.learn import config


def attach(state) -> None:
    """Record (and, with an objective, learn for) an enhanced function whose version was just loaded."""
    objective = state.config.optimize_for
    if not objective and not config.get().events:
        return
    from poet_runtime import journal
    from poet_runtime.learn import sink
    from poet_runtime.learn.objectives import LABELLED

    root = journal.events_root(Path(state.version.path).parent.parent)
    info = sink.register(state.function_id, root, objective, needs_output=objective in LABELLED)
    info.state = state
    if getattr(state.policy, "record_inputs", False):  # the policy lets this function's inputs be stored
        state.recorder = sink.recorder_with_inputs(info)
    else:
        state.recorder = sink.recorder_for(info)
    if not objective:
        return
    if info.engine is None:
        from poet_runtime.learn.engine import Learning

        info.engine = Learning(info, state)
        info.engine.catch_up()
    elif info.engine.state is not state or info.engine.version != state.version_number:
        info.engine.version_loaded(state)


def recorded_samples(store_root, function_id: str, limit: int | None = None) -> list[tuple[list, dict]]:
    """``journal.recorded_samples`` with learning's own default count."""
    from poet_runtime import journal

    return journal.recorded_samples(store_root, function_id, config.get().input_samples if limit is None else limit)


def engine_for(function) -> object | None:
    """The learning engine of an enhanced function (or function id), if it has one in this process."""
    from poet_runtime.learn import sink

    if not isinstance(function, str):
        from poet_runtime.runtime import state_of

        state = state_of(function)
        function = state.function_id if state is not None else None
    info = sink.registered(function) if function else None
    return info.engine if info is not None else None
