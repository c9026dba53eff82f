"""A small ML-monitoring job: is today's feature batch drifting away from the reference?

Run it plain (``python app.py``: @poet changes nothing) or with POET on
(``python -m poet_runtime app.py``): then detect_drift runs enhanced. Its inputs are
checked and repaired (missing sensor values dropped), its output validated, and
the generated code is stored, readable, under ``.poet/`` beside this file.
"""

from __future__ import annotations

import math
import random
import statistics

from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current_data: list[float], reference_data: list[float], threshold: float = 0.25) -> dict:
    """Drift when the current mean moves more than ``threshold`` reference deviations away."""
    spread = statistics.pstdev(reference_data) or 1.0
    shift = abs(statistics.fmean(current_data) - statistics.fmean(reference_data)) / spread
    score = 1.0 - math.exp(-shift)  # 0 = identical means, towards 1 = far apart
    return {"drift_detected": shift > threshold, "score": round(score, 4)}


def batches(seed: int = 7):
    rng = random.Random(seed)
    reference = [rng.gauss(10.0, 2.0) for _ in range(500)]
    for day, shift in enumerate([0.0, 0.1, 0.0, 1.5, 3.0, 0.2], start=1):
        current = [rng.gauss(10.0 + shift, 2.0) for _ in range(200)]
        current[::37] = [None] * len(current[::37])  # a flaky sensor: missing readings
        yield day, current, reference


def main() -> None:
    import poet_runtime

    mode = "enhanced by POET" if poet_runtime.is_enabled() else "plain (POET is off)"
    print(f"detect_drift runs {mode}")
    for day, current, reference in batches():
        try:
            result = detect_drift(current, reference)
        except TypeError as error:  # the plain function cannot average missing readings
            print(f"day {day}: failed: {error}")
            continue
        flag = "DRIFT" if result["drift_detected"] else "ok   "
        print(f"day {day}: {flag} score={result['score']:.4f}")
    record = poet_runtime.last_execution()
    if record is not None:
        phases = ", ".join(f"{name} {ms:.3f} ms" for name, ms in record.phase_ms.items())
        print(f"last call: {record.function} v{record.version} on backend {record.backend}, "
              f"status {record.status}{' (fell back: ' + str(record.reason) + ')' if record.fell_back else ''}; {phases}")
        state = getattr(detect_drift, "__poet__", None)
        if state is not None and state.version is not None:
            print(f"generated code: {state.version.path / 'code.py'}")


if __name__ == "__main__":
    main()
