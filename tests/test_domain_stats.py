"""poet_sandbox.stats: the two-sample evidence of ml_monitoring, stdlib only, checked against scipy's answers.

tests/data/stats_reference.json holds samples and what scipy 1.17 said about them (how it was made:
tests/data/make_stats_reference.py); scipy itself is not needed here.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest

from poet_runtime.resources import load_facility, sandbox_dir

load_facility()
from poet_sandbox import stats  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "stats_reference.json").read_text())
TOLERANCE = 1e-6


@pytest.mark.parametrize("case", REFERENCE["ks_2samp"], ids=lambda c: f"{c['method']}-{len(c['a'])}x{len(c['b'])}")
def test_ks_2samp_agrees_with_scipy(case):
    result = stats.ks_2samp(case["a"], case["b"], method=case["method"])
    assert result["method"] == case["method"]
    assert abs(result["statistic"] - case["statistic"]) <= TOLERANCE
    assert abs(result["p_value"] - case["p_value"]) <= TOLERANCE, (result, case["p_value"])


def test_the_kolmogorov_distribution_agrees_with_scipys_kstwo_everywhere_it_was_asked():
    worst = max(abs(stats.kolmogorov_sf(row["d"], row["n"]) - row["sf"]) for row in REFERENCE["kolmogorov_sf"])
    assert worst <= TOLERANCE


@pytest.mark.parametrize("case", REFERENCE["divergences"], ids=lambda c: f"{len(c['current'])}x{len(c['reference'])}")
def test_psi_and_kl_agree_with_numpys_histogram_and_scipys_entropy(case):
    assert abs(stats.psi(case["current"], case["reference"], case["bins"]) - case["psi"]) <= TOLERANCE
    assert abs(stats.kl_divergence(case["current"], case["reference"], case["bins"]) - case["kl"]) <= TOLERANCE


def test_auto_is_exact_for_small_samples_and_missing_values_are_left_out():
    a, b = [1.0, 2.0, None, float("nan"), 3.0], [2.5, 3.5, 4.5, float("inf")]
    result = stats.ks_2samp(a, b)
    assert result["method"] == "exact" and (result["n1"], result["n2"]) == (3, 3)
    assert stats.ks_2samp(list(range(200)), list(range(100, 300)))["method"] == "asymp"  # 40 000 cells
    with pytest.raises(ValueError):
        stats.ks_2samp([None], [1.0])
    assert stats.ks_2samp([1.0, 1.0], [1.0, 1.0]) == {"statistic": 0.0, "p_value": 1.0, "method": "exact", "n1": 2, "n2": 2}


def test_data_quality_reports_sizes_rates_constant_series_and_a_score():
    report = stats.data_quality({"current": [1.0, None, float("nan"), float("inf"), 2.0, "x", 3.0, 4.0],
                                 "reference": [5.0] * 10, "empty": []})
    current = report["samples"]["current"]
    assert (current["n"], current["missing"], current["non_finite"], current["non_numeric"]) == (8, 2, 1, 1)
    assert current["missing_rate"] == 0.25 and current["score"] == 0.5 and not current["constant"]
    assert report["samples"]["reference"]["constant"] and report["samples"]["reference"]["score"] == 0.5
    assert report["samples"]["empty"]["score"] == 0.0 and report["score"] == 0.0
    assert stats.data_quality({"a": [1.0, 2.0]})["score"] == 1.0


def test_the_rolling_window_keeps_the_last_batches():
    window = []
    for batch in ([1.0], [2.0, None], [3.0], [4.0]):
        stats.push_window(window, batch, 3)
    assert window == [[2.0], [3.0], [4.0]] and stats.window_reference(window) == [2.0, 3.0, 4.0]


def test_evidence_is_plain_data_and_the_module_imports_only_the_standard_library():
    evidence = stats.two_sample_evidence([0.1 * i for i in range(50)], [0.1 * i + 2 for i in range(60)])
    assert json.loads(json.dumps(evidence)) == evidence and evidence["p_value"] < 0.001
    assert stats.two_sample_evidence([], [1.0]) is None
    tree = ast.parse((Path(sandbox_dir()) / "poet_sandbox" / "stats.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names), imported
    assert math.isclose(stats.kolmogorov_sf(0.5, 1), 1.0) and stats.kolmogorov_sf(1.0, 10) == 0.0
