"""Writes stats_reference.json: scipy's answers for poet_sandbox.stats to be checked against.

Not run by the tests (scipy is not a dependency: its wheel is ~35 MB). Produced once with
scipy 1.17.1 and numpy in a throwaway virtualenv outside the repository:

    python -m venv /tmp/scipyvenv && /tmp/scipyvenv/bin/pip install scipy numpy
    /tmp/scipyvenv/bin/python tests/data/make_stats_reference.py

The samples are stored in the file (rounded), so the check needs neither scipy nor this script.
"""

import json
import random
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import entropy, ks_2samp, kstwo


def sample(rng, n, shift, digits, scale=1.0):
    return [round(rng.gauss(shift, scale), digits) for _ in range(n)]


def main():
    rng = random.Random(20261202)
    cases = []
    # exact: small samples, ties (few digits), equal and unequal sizes, a sample of one
    for n1, n2, shift, digits in [(1, 1, 0, 3), (1, 9, 0.5, 3), (5, 5, 0, 1), (8, 13, 1.0, 2), (20, 20, 0.2, 1),
                                  (30, 45, 0.0, 4), (37, 61, 0.6, 4), (50, 50, 2.0, 3), (64, 96, 0.1, 1),
                                  (99, 100, 0.3, 4), (100, 100, 0.0, 4), (12, 700, 0.8, 4)]:
        a, b = sample(rng, n1, 0.0, digits), sample(rng, n2, shift, digits)
        result = ks_2samp(a, b, method="exact")
        cases.append({"a": a, "b": b, "method": "exact", "statistic": float(result.statistic),
                      "p_value": float(result.pvalue)})
    # asymptotic: large samples; round(n1 n2 / (n1 + n2)) below and above 140 (Durbin's matrix,
    # Pomeranz's region, the Smirnov tail, the Pelz-Good expansion in scipy's choice)
    for n1, n2, shift in [(150, 250, 0.0), (200, 500, 0.4), (300, 280, 0.15), (500, 500, 0.0), (800, 600, 0.1),
                          (1500, 2000, 0.0), (2000, 1500, 0.03), (1000, 900, 1.0), (3000, 3000, 0.05)]:
        a, b = sample(rng, n1, 0.0, 4), sample(rng, n2, shift, 4)
        result = ks_2samp(a, b, method="asymp")
        cases.append({"a": a, "b": b, "method": "asymp", "statistic": float(result.statistic),
                      "p_value": float(result.pvalue)})
    kolmogorov = []
    for n in (1, 2, 7, 40, 140, 141, 400, 2500, 20000):
        for d in np.linspace(0.002, 0.98, 25):
            kolmogorov.append({"n": n, "d": float(d), "sf": float(kstwo.sf(d, n))})
    # PSI and KL over equal-width bins of the joint range (numpy.histogram), empty bins at 1e-4
    divergences = []
    for n1, n2, shift, bins in [(200, 300, 0.0, 10), (200, 300, 0.5, 10), (500, 400, 2.0, 10), (50, 60, 0.3, 5),
                                (1000, 1000, 0.1, 20)]:
        a, b = sample(rng, n1, shift, 4), sample(rng, n2, 0.0, 4)
        low, high = min(a + b), max(a + b)
        p = np.histogram(a, bins=bins, range=(low, high))[0] / n1
        q = np.histogram(b, bins=bins, range=(low, high))[0] / n2
        p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
        divergences.append({"current": a, "reference": b, "bins": bins,
                            "psi": float(np.sum((p - q) * np.log(p / q))), "kl": float(entropy(p, q))})
    out = {"produced_by": f"tests/data/make_stats_reference.py with scipy {scipy.__version__}, numpy {np.__version__}",
           "ks_2samp": cases, "kolmogorov_sf": kolmogorov, "divergences": divergences}
    Path(__file__).with_name("stats_reference.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
