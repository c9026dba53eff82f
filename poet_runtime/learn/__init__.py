"""Learning: durable events, feedback, one learner per objective, regeneration when it degrades.

The call path knows nothing of this package except ``attach(state)``, called after a
version is loaded. For a function without an objective (and ``POET_EVENTS`` unset) it
returns at once: no listener, no files, no cost. Otherwise it registers the function
with the event sink (which subscribes to the in-process bus) and, with an objective,
gives it a ``Learning`` engine that first catches up on feedback left pending by earlier
processes. With a broker set (``POET_BROKER``) the journal is also forwarded to it
(``fleet.publisher``), the engine steps aside (the fleet's learner learns; see ``engine``)
and ``fleet.follower`` applies what that learner publishes. Nothing here imports pydantic; ``models`` does, and only feedback and the
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
    on_disk = bool(getattr(state.policy, "record_inputs", False))  # the policy lets its inputs be stored
    recorder = sink.recorder_with_inputs(info) if on_disk else sink.recorder_for(info)
    info.inputs = None
    if objective in LABELLED and replay_blocker(state) is None and (sink.watch_train(state) or on_disk):
        # Replay needs the inputs of the calls that get labelled: recent ones stay in memory
        # (bounded), whatever the policy; to disk only where it allows (the recorder above).
        import inspect

        try:
            width = len(inspect.signature(state.original).parameters)
        except (TypeError, ValueError):
            width = 1
        recorder = sink.remembering_inputs(info, recorder, config.get().replay_inputs, width)
    state.recorder = recorder
    if not objective:
        return
    if info.engine is None:
        from poet_runtime.learn.engine import Learning

        info.engine = Learning(info, state)
        info.engine.catch_up()
        if info.engine.fleet:  # a broker is set: what the fleet's learner decides comes from it
            from poet_runtime.fleet import follower

            follower.watch(info)
    elif info.engine.state is not state or info.engine.version != state.version_number:
        info.engine.version_loaded(state)


_purity: dict = {}  # function id -> (version it was judged for, reason or None)


def replay_blocker(state) -> str | None:
    """Why this function's labelled calls cannot be replayed to tune its parameters (None: they can).

    Replaying runs the user's function again: only where calls have no side effects (a pure
    domain, or the static purity check finds the function pure), and only for synchronous ones.
    """
    if not config.get().replay:
        return "replay is off (learning settings)"
    if state.is_async:
        return "async function"
    from poet_runtime.domains import get_domain

    if get_domain(state.config.domain).pure:
        return None
    cached = _purity.get(state.function_id)
    if cached is None or cached[0] is not state.version:
        try:
            from poet_runtime.generate.purity import check_purity

            purity = check_purity(state.spec())
            reason = None if purity.pure else f"not pure: {purity.explain()}"
        except Exception as error:  # no source to read: not shown to be pure
            reason = f"purity unknown: {type(error).__name__}"
        cached = (state.version, reason)
        _purity[state.function_id] = cached
    return cached[1]


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
