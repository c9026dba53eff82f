"""Learning: does feedback make an enhanced function better, and how close to the best fixed setting?

Shapes (issue 14): four ml_monitoring functions whose decision parameter lives on a scale only
the function knows (a threshold on a z-score whose output reports 1 - e^-z; an alpha on a
p-value, positive when *below* it, the output reporting 1 - p; a count threshold; a threshold
on a distance the output reports rescaled), each fed 200 labelled calls with 10 % of the
labels flipped; accuracy on a fresh, clean test set at the start and after 50, 100 and 200
feedbacks, against the oracle (the best fixed value: the true boundary, by construction),
for the replay learner (parameters tuned through the function) and for the output-only
learner (``replay=False``, what learning did before) as the baseline, in one run.

Accuracy: an ml_monitoring drift detector (optimize_for="accuracy") whose starting
threshold is poor, fed labelled batches; accuracy on a held-out stream before learning
and after 50, 100 and 200 feedback events, against the oracle (the best fixed threshold
on the held-out stream). Beside it, in the same run, a threshold on the KS statistic that
the ml_monitoring domain records with each call, learned from the same labels
(``learn.objectives.FeatureThreshold``): does a statistic the function does not compute
beat the current learner? Latency: an api_operations call to a dependency whose latency
has a slow tail (optimize_for="latency"): p95 before and after learning.

    python benchmarks/bench_learning.py [--seeds 3] [--only shapes|accuracy]
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DETECTOR = '''\
import statistics

from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.9) -> dict:
    spread = statistics.pstdev(reference) or 1.0
    shift = abs(statistics.fmean(current) - statistics.fmean(reference)) / spread
    score = min(shift / 2.0, 1.0)
    return {"drift_detected": score > threshold, "score": score}
'''

FETCH = '''\
import random
import time

from poet_runtime import poet

RNG = random.Random({seed})


@poet(domain="api_operations", optimize_for="latency", timeout=2.0, policy="trusted")
def fetch(key: str) -> dict:
    time.sleep(0.04 if RNG.random() < 0.15 else 0.001)  # the dependency: 15% of answers are slow
    return {{"status": "success", "key": key}}
'''


SHAPES_SOURCE = '''\
import math
import statistics

from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def drift_z(current: list[float], reference: list[float], threshold: float = 0.9) -> dict:
    spread = statistics.pstdev(reference) or 1.0
    z = abs(statistics.fmean(current) - statistics.fmean(reference)) / spread
    return {"drift_detected": z > threshold, "score": 1.0 - math.exp(-z)}


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def drift_p(current: list[float], reference: list[float], alpha: float = 0.001) -> dict:
    spread = statistics.pstdev(reference) or 1.0
    z = abs(statistics.fmean(current) - statistics.fmean(reference)) / (spread * math.sqrt(2.0 / len(current)))
    p = math.erfc(z / math.sqrt(2.0))
    return {"drift_detected": p < alpha, "score": 1.0 - p}


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def burst(values: list[float], window: int = 40) -> dict:
    count = sum(1 for value in values if value > 2.5)
    return {"drift_detected": count >= window, "score": count / len(values)}


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def drift_distance(current: list[list[float]], reference: list[list[float]], drift_threshold: float = 0.2) -> dict:
    dx = statistics.fmean(p[0] for p in current) - statistics.fmean(p[0] for p in reference)
    dy = statistics.fmean(p[1] for p in current) - statistics.fmean(p[1] for p in reference)
    distance = math.hypot(dx, dy)
    return {"drift_detected": distance > drift_threshold, "score": min(distance / 4.0, 1.0)}
'''


def _pair(rng: random.Random, n: int = 30):
    shift = rng.uniform(0.0, 1.0)
    return [rng.gauss(shift, 1.0) for _ in range(n)], [rng.gauss(0.0, 1.0) for _ in range(n)]


def _counts(rng: random.Random):
    values = [rng.gauss(0.0, 1.0) for _ in range(200)]
    for index in rng.sample(range(200), rng.randint(0, 30)):
        values[index] = rng.uniform(2.6, 4.0)
    return (values,)


def _points(rng: random.Random):
    angle, size = rng.uniform(0, 6.283), rng.uniform(0.0, 1.2)
    current = [[rng.gauss(size * math.cos(angle), 1.0), rng.gauss(size * math.sin(angle), 1.0)] for _ in range(40)]
    reference = [[rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)] for _ in range(40)]
    return current, reference


# name: (function, parameter, true boundary, inputs, what it is)
SHAPES = {
    "z-score": ("drift_z", "threshold", 0.45, _pair, "threshold on a z-score, output 1 - e^-z"),
    "p-value": ("drift_p", "alpha", 0.02, _pair, "alpha on a p-value (drift when below), output 1 - p"),
    "count": ("burst", "window", 12, _counts, "count threshold (window), output a fraction"),
    "distance": ("drift_distance", "drift_threshold", 0.6, _points, "threshold on a distance, output rescaled /4"),
}


def shape_run(shape: str, seed: int, folder: Path, replay: bool, noise: float = 0.1) -> dict:
    import poet_runtime
    from poet_runtime import settings
    from poet_runtime.learn import config, engine_for, sink

    name, parameter, boundary, inputs, _ = SHAPES[shape]
    tag = f"{shape.replace('-', '_')}_{seed}_{'replay' if replay else 'output'}"
    settings.override(home=folder / f"home-{tag}", cache_dir=folder / "cache")
    config.override(replay=replay)
    module = fresh(folder, f"bench_shape_{tag}", SHAPES_SOURCE)
    function = getattr(module, name)
    original = function.__poet__.original if function.__poet__ is not None else function
    rng = random.Random(1000 + seed)
    truth = lambda args: bool(original(*args, **{parameter: boundary})["drift_detected"])  # noqa: E731
    test = [(args, truth(args)) for args in (inputs(rng) for _ in range(300))]

    def evaluate() -> float:
        return sum(bool(function(*args)["drift_detected"]) == label for args, label in test) / len(test)

    row = {"start": evaluate(), "oracle": sum(truth(args) == label for args, label in test) / len(test)}
    start = time.perf_counter()
    for count in range(1, 201):
        args = inputs(rng)
        function(*args)
        label = truth(args) != (rng.random() < noise)
        function.feedback(label=label)
        if count in (50, 100, 200):
            row[f"after {count}"] = evaluate()
    row["feedback_s"] = time.perf_counter() - start
    engine = engine_for(function)
    row["learned"] = engine.store.current().params().get(parameter) if engine is not None else None
    row["replays"] = engine.tuner.replays if engine is not None and engine.tuner is not None else 0
    sink.shutdown()
    config.reset()
    poet_runtime.disable()
    poet_runtime.enable(hook=False)
    return row


def shapes_report(seeds: int, folder: Path) -> None:
    med = statistics.median
    keys = ("start", "after 50", "after 100", "after 200", "oracle")
    print(f"issue 14 shapes: accuracy objective, 10 % label noise, {seeds} seeds (medians); clean test set of 300")
    print(f"  {'shape':<9} {'learner':<12} " + " ".join(f"{k:>9}" for k in keys) + "   gap@100  learned")
    for shape, (_, parameter, boundary, _, what) in SHAPES.items():
        for replay in (True, False):
            rows = [shape_run(shape, seed, folder, replay) for seed in range(seeds)]
            gap = med(r["oracle"] - r["after 100"] for r in rows) * 100
            learned = med(r["learned"] for r in rows if r["learned"] is not None) if any(
                r["learned"] is not None for r in rows) else None
            print(f"  {shape:<9} {'replay' if replay else 'output-only':<12} "
                  + " ".join(f"{med(r[k] for r in rows):9.3f}" for k in keys)
                  + f"   {gap:+5.1f}    {parameter}={learned if learned is None else round(learned, 4)}"
                  + (f" (true {boundary}; {med(r['feedback_s'] for r in rows):.1f} s for 200 feedbacks, "
                     f"{med(r['replays'] for r in rows):.0f} replayed calls)" if replay else ""))
        print(f"  {'':<9} ({what})")


def batch(rng: random.Random, kind: str = "shift"):
    """A labelled pair of batches: drift is a shifted mean ("shift") or a wider spread ("scale")."""
    drifted = rng.random() < 0.5
    shift = rng.uniform(0.15, 1.0) if drifted and kind == "shift" else 0.0
    spread = rng.uniform(1.5, 2.5) if drifted and kind == "scale" else 1.0
    reference = [rng.gauss(0.0, 1.0) for _ in range(50)]
    current = [rng.gauss(shift, spread) for _ in range(50)]
    return current, reference, drifted


def fresh(folder: Path, name: str, source: str):
    (folder / "mods").mkdir(parents=True, exist_ok=True)
    (folder / "mods" / f"{name}.py").write_text(source)
    if str(folder / "mods") not in sys.path:
        sys.path.insert(0, str(folder / "mods"))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def accuracy_run(seed: int, folder: Path, kind: str = "shift") -> dict:
    import poet_runtime
    from poet_runtime import settings
    from poet_runtime.learn import sink

    settings.override(home=folder / f"home-acc-{kind}-{seed}", cache_dir=folder / "cache")
    module = fresh(folder, f"bench_drift_{kind}_{seed}", DETECTOR)
    rng = random.Random(seed)
    held_out = [batch(rng, kind) for _ in range(400)]

    def evaluate() -> tuple[float, list[float]]:
        scores, right = [], 0
        for current, reference, drifted in held_out:
            result = module.detect_drift(current, reference)
            scores.append(result["score"])
            right += result["drift_detected"] == drifted
        return right / len(held_out), scores

    row = {}
    row["before"], scores = evaluate()
    labels = [d for _, _, d in held_out]
    candidates = sorted(set(scores))
    row["oracle"] = max(sum((s > t) == d for s, d in zip(scores, labels)) for t in [-1.0, *candidates]) / len(labels)
    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import FeatureThreshold

    # Beside it: a threshold on the KS statistic that ml_monitoring records with each call (its
    # domain.evidence), learned from the same labels; it moves nothing, so it is scored apart.
    by_ks = FeatureThreshold("accuracy", config.get(), "ks_statistic")
    held_evidence = []
    start = time.perf_counter()
    for count in range(1, 201):
        current, reference, drifted = batch(rng, kind)
        output = module.detect_drift(current, reference)
        by_ks.observe(poet_runtime.last_execution().evidence, output, drifted)
        module.detect_drift.feedback(label=drifted)
        if count in (50, 100, 200):
            row[f"after {count}"] = evaluate()[0]
            if not held_evidence:
                for current_, reference_, _ in held_out:
                    module.detect_drift(current_, reference_)
                    held_evidence.append(poet_runtime.last_execution().evidence)
            row[f"ks after {count}"] = sum(by_ks.predict(ev) == d for ev, (_, _, d) in zip(held_evidence, held_out)
                                           ) / len(held_out)
    row["feedback_s"] = time.perf_counter() - start
    row["ks threshold"] = by_ks.learned()
    sink.shutdown()
    poet_runtime.disable()
    poet_runtime.enable(hook=False)
    return row


def latency_run(seed: int, folder: Path) -> dict:
    import poet_runtime
    from poet_runtime import settings
    from poet_runtime.learn import config, sink

    settings.override(home=folder / f"home-lat-{seed}", cache_dir=folder / "cache")
    config.override(latency_samples=100)
    module = fresh(folder, f"bench_fetch_{seed}", FETCH.format(seed=seed))

    def run(n: int) -> list[float]:
        durations = []
        for i in range(n):
            start = time.perf_counter()
            module.fetch(str(i))
            durations.append((time.perf_counter() - start) * 1000)
        sink.flush()  # the learner sees what was just measured
        return sorted(durations)

    before = run(100)
    after = run(300)
    from poet_runtime.learn import engine_for

    params = engine_for(module.fetch).store.current().params()
    sink.shutdown()
    config.reset()
    poet_runtime.disable()
    poet_runtime.enable(hook=False)
    q = lambda d, p: d[min(len(d) - 1, int(p * len(d)))]  # noqa: E731
    return {"p95 before": q(before, 0.95), "p95 after": q(after, 0.95), "p50 before": q(before, 0.5),
            "p50 after": q(after, 0.5), "timeout_s": params.get("timeout_s")}


def accuracy_report(kind: str, seeds: int, folder: Path) -> None:
    med = statistics.median
    rows = [accuracy_run(seed, folder, kind) for seed in range(seeds)]
    what = "a shifted mean" if kind == "shift" else "a wider spread, same mean (the function's mean gap cannot see it)"
    print(f"accuracy objective, ml_monitoring drift detector, starting threshold 0.9, drift = {what}, "
          f"{seeds} seeds (medians)")
    for key in ("before", "after 50", "after 100", "after 200", "oracle"):
        values = [r[key] for r in rows]
        gap = med(r["oracle"] - r[key] for r in rows) * 100
        print(f"  {key:<10} accuracy {med(values):.3f}   (gap to oracle {gap:+.1f} points; per seed "
              + ", ".join(f"{v:.3f}" for v in values) + ")")
    print(f"  200 feedback events took {med(r['feedback_s'] for r in rows):.2f} s (incl. calls and fsyncs)")
    gap100 = med(r["oracle"] - r["after 100"] for r in rows) * 100
    print(f"  after 100 feedback events: {gap100:.1f} points from the oracle (target <= 2)")
    for key in ("after 50", "after 100", "after 200"):
        values = [r[f"ks {key}"] for r in rows]
        print(f"  KS-statistic threshold learned from the evidence, {key:<9}: accuracy {med(values):.3f} "
              f"vs the current learner {med(r[key] for r in rows):.3f} (ratio "
              f"{med(r[f'ks {key}'] / r[key] for r in rows):.3f}; per seed " + ", ".join(f"{v:.3f}" for v in values) + ")")
    print(f"  learned KS threshold {med(r['ks threshold'] for r in rows):.4f} (the oracle on the function's own score: "
          f"{med(r['oracle'] for r in rows):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=("shapes", "accuracy"),
                        help="run only the issue 14 shapes, or only the accuracy runs (shift and scale)")
    args = parser.parse_args()
    import poet_runtime

    folder = Path(tempfile.mkdtemp(prefix="poet-bench-learning-"))
    poet_runtime.enable(hook=False)
    med = statistics.median
    if args.only != "accuracy":
        shapes_report(args.seeds, folder)
    if args.only == "shapes":
        poet_runtime.disable()
        return
    for kind in ("shift", "scale"):
        accuracy_report(kind, args.seeds, folder)
    if args.only == "accuracy":
        poet_runtime.disable()
        return
    rows = [latency_run(seed, folder) for seed in range(args.seeds)]
    print(f"latency objective, api_operations, dependency 1 ms or 40 ms (15%), {args.seeds} seeds (medians)")
    for key in ("p50 before", "p50 after", "p95 before", "p95 after"):
        print(f"  {key:<11} {med(r[key] for r in rows):8.2f} ms")
    print(f"  p95 ratio after/before {med(r['p95 after'] / r['p95 before'] for r in rows):.2f}; "
          f"learned timeout_s {med(r['timeout_s'] for r in rows):.4f} (started at 2.0)")
    poet_runtime.disable()


if __name__ == "__main__":
    main()
