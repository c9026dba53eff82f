"""Per-call overhead of an enhanced function (cached, in-process) against two baselines.

(a) what a user would compose by hand for the same guarantees: stamina.retry +
    a pybreaker breaker + pydantic.validate_call(validate_return=True);
(b) a hand-written straight-line equivalent (inline type checks of arguments and
    result, a 3-try loop, a breaker counter): the floor a specialised function can reach.

Overhead = median time per call minus the plain call's median, all in one run.
Targets: ours <= 0.1x the composed stack's overhead and <= 5x the floor's.

Two more rows measure the recorded call path (issue 9): ``detect`` as ``fleet_publish_rows.py``
calls it (domain ml_monitoring, objective accuracy: every call goes to the event sink, whose
flusher thread writes the journal in this process), against the same function undecorated; and,
since such a function starts the sink for the whole process, every other row is measured with the
sink listening (a function without an objective must pay nothing for that).

    python benchmarks/bench_call_overhead.py [--repeat 15] [--number 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain(x: int, y: int) -> int:
    return x + y


def build_composed():
    import pybreaker
    import pydantic
    import stamina

    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    @breaker
    @stamina.retry(on=ConnectionError, attempts=3)
    @pydantic.validate_call(validate_return=True)
    def composed(x: int, y: int) -> int:
        return x + y

    return composed


def build_floor():
    state = {"failures": 0}

    def floor(x, y):
        if type(x) is not int or type(y) is not int:
            raise TypeError("x and y must be int")
        if state["failures"] >= 5:
            raise RuntimeError("circuit open")
        for attempt in range(3):
            try:
                result = x + y
                break
            except ConnectionError:
                if attempt == 2:
                    state["failures"] += 1
                    raise
        if type(result) is not int:
            raise TypeError("result must be int")
        state["failures"] = 0
        return result

    return floor


def build_enhanced(home: str, policy: str = "trusted"):
    """The same function under ``policy``; under ``default`` the built-in version is
    verified by regeneration and so runs in-process too (no worker round trip)."""
    os.environ.update(POET_HOME=home, POET_CACHE_DIR=os.path.join(home, "cache"))
    import poet_runtime
    from poet_runtime import poet

    poet_runtime.enable(hook=False)

    @poet(retries=2, policy=policy)
    def enhanced(x: int, y: int) -> int:
        return x + y

    enhanced.__qualname__ = f"enhanced_{policy}"  # one store folder per policy
    poet_runtime.enhance(enhanced)
    assert enhanced(1, 2) == 3 and not poet_runtime.last_execution().fell_back
    return enhanced


def plain_detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}


def build_recorded(home: str):
    """``plain_detect`` with an objective: every call is recorded (sink, flusher, journal)."""
    import poet_runtime
    from poet_runtime import poet

    @poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
    def recorded_detect(score: float, threshold: float = 0.5) -> dict:
        return {"drift_detected": score > threshold, "score": score}

    poet_runtime.enhance(recorded_detect)
    assert recorded_detect(0.25) == plain_detect(0.25) and not poet_runtime.last_execution().fell_back
    return recorded_detect


def measure(function, repeat: int, number: int, call: str = "f(1, 2)") -> float:
    """Median seconds per call over ``repeat`` runs of ``number`` calls."""
    timer = timeit.Timer(call, globals={"f": function})
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number))


def interleaved(candidates: dict, repeat: int, number: int) -> dict:
    """name -> per-round seconds per call; each round measures every candidate back to back,
    so that machine noise hits every candidate alike."""
    samples = {name: [] for name in candidates}
    for _ in range(repeat):
        for name, function in candidates.items():
            samples[name].append(measure(function, 1, number if "stamina" not in name else number // 10,
                                         "f(0.25)" if "detect" in name else "f(1, 2)"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        in_process = build_enhanced(home)
        candidates = {
            "plain": plain,
            "poet (in-process)": in_process,
            "poet default (verified)": build_enhanced(home, "default"),
            "hand-written floor": build_floor(),
            "stamina+pybreaker+pydantic": build_composed(),
        }
        samples = interleaved(candidates, args.repeat, args.number)
        # Then with the event sink on (a function with an objective starts it for the process).
        recorded = {"plain": plain, "poet (in-process), sink listening": in_process, "plain detect": plain_detect,
                    "poet recorded detect (objective)": build_recorded(home)}
        second = interleaved(recorded, args.repeat, args.number)
    results = {name: statistics.median(values) for name, values in samples.items()}
    base = results["plain"]
    print(f"{'candidate':34} {'median/call':>12} {'overhead':>12}")
    for name, value in results.items():
        print(f"{name:34} {value * 1e9:10.1f}ns {(value - base) * 1e9:10.1f}ns")
    ours = results["poet (in-process)"] - base
    composed = results["stamina+pybreaker+pydantic"] - base
    floor = results["hand-written floor"] - base
    print()
    print(f"overhead ratio ours/composed: {ours / composed:.3f}  (target <= 0.1)")
    print(f"overhead ratio ours/floor:    {ours / floor:.2f}  (target <= 5)")
    verified = results["poet default (verified)"] - base
    print(f"overhead ratio default (verified built-in)/floor: {verified / floor:.2f}  (target <= 5)")
    # The same ratios paired round by round (each round measures every candidate back to back),
    # so that a slow minute of a noisy machine weighs on both sides of a ratio alike.
    def paired(name):
        return statistics.median((ours_i - plain_i) / (floor_i - plain_i) for ours_i, plain_i, floor_i in zip(
            samples[name], samples["plain"], samples["hand-written floor"]))
    print(f"paired per-round median, ours/floor: trusted {paired('poet (in-process)'):.2f}, "
          f"default (verified) {paired('poet default (verified)'):.2f}  (target <= 5)")
    print()
    print("with the event sink on (a function with an objective in the process):")
    with_sink = {name: statistics.median(values) for name, values in second.items()}
    for name, value in with_sink.items():
        print(f"{name:34} {value * 1e9:10.1f}ns")

    def over(name, baseline):
        return statistics.median(a - b for a, b in zip(second[name], second[baseline]))

    listening = over("poet (in-process), sink listening", "plain")
    print(f"poet (in-process) overhead with the sink listening: {listening * 1e9:.0f} ns (without: {ours * 1e9:.0f} ns; "
          f"ratio {listening / ours:.2f}, paired per-round medians)")
    per_call = with_sink["poet recorded detect (objective)"]
    print(f"recorded call (objective; the sink's flusher runs in this process): {over('poet recorded detect (objective)', 'plain detect') * 1e9:.0f} ns "
          f"over the undecorated detect (paired per-round median); {1 / per_call:.0f} calls/s")


if __name__ == "__main__":
    main()
