"""The fidelity suite (issue 15): an enhanced call behaves exactly like the original.

Every case in ``tests/fidelity/cases_*.py`` is an ordinary ``@poet`` function with a
driver. ``tests/fidelity/run_fidelity.py`` runs all of them in one real process and
writes what it observed: the driver's facts (values, types, identity checks, argument
and global state after the calls), the exception (type, args, cause/context chain,
traceback frames), stdout, stderr, logging records, warnings, how many times the
user's logic ran, and for each call whether it ran enhanced
(``poet_runtime.last_execution()``). It runs once with plain ``python`` (the
baseline, runtime off) and once per policy under ``python -m poet_runtime``, all at
the same time. Then:

- any difference from the baseline is a divergence, and the test of that policy fails
  listing each divergent case with both observations;
- a call that fell back is not a divergence, but counts against the policy's
  enhanced percentage, which must reach ``ENHANCED_TARGET``.

The table of percentages is printed and written, with every divergence and fallback,
to ``fidelity.json`` in the pytest tmp folder of the run (its path is printed).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from hook_helpers import PYTHON, child_env
from wasm_helpers import wasm_backend  # noqa: F401  (compiles the WASM module once per machine)

pytestmark = pytest.mark.slow

FIDELITY = Path(__file__).resolve().parent / "fidelity"
RUNNER = FIDELITY / "run_fidelity.py"
POLICIES = ("trusted", "default", "strict")
ENHANCED_TARGET = 95.0  # percent of calls that must run enhanced under every policy (issue 15)
MIN_CASES = 120  # issue 15 asks for at least this many cases
MAX_POET_FRAMES = 1  # POET frames a user's exception may carry in its traceback (issue 15, point 10)
RUN_TIMEOUT_S = 600  # all the runs together, on a loaded machine too (each case has its own limit in run_fidelity.py)
# Processes per run: the strict run (a WASM guest per enhancement) is the long one, so it is split by case module.
SHARDS = {"strict": max(1, min(4, os.cpu_count() or 1))}

# Differences no wrapper can avoid, each stated in the README (the text below must be there):
# they are listed in the report but do not fail the suite. Anything else different does.
DOCUMENTED = {
    # warnings.warn(stacklevel=2) inside the function counts frames, and the wrapper is one.
    "cases_output.deprecation_warning_stacklevel_2": "`warnings.warn(..., stacklevel=2)`",
}
README = Path(__file__).resolve().parents[1] / "README.md"

# What is compared between the baseline and an enhanced run, for every case.
COMPARED = ("facts", "error", "stdout", "stderr", "logs", "warnings", "runs", "calls")


# ---------------------------------------------------------------- the comparison (pure, unit-tested below)


def _strip_poet_frames(value):
    """The observation with POET's own traceback frames removed (they are counted apart)."""
    if isinstance(value, dict):
        return {
            key: ([f for f in item if f[0] != "<poet>"] if key == "frames" else _strip_poet_frames(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_strip_poet_frames(item) for item in value]
    return value


def _poet_frames(value) -> int:
    """The largest number of POET frames in any one traceback of the observation."""
    if isinstance(value, dict):
        own = sum(1 for f in value.get("frames") or () if f[0] == "<poet>")
        return max([own, *(_poet_frames(item) for key, item in value.items() if key != "frames")])
    if isinstance(value, list):
        return max([0, *(_poet_frames(item) for item in value)])
    return 0


def _comparable(observation: dict, field: str):
    value = observation.get(field)
    if field == "calls":  # what the calls were; whether they ran enhanced is counted, not compared.
        # Sorted: concurrent calls (asyncio.gather) may finish in another order, which is not a promise.
        return sorted([call["function"], call["raised"] or ""] for call in value or ())
    return _strip_poet_frames(value)


def compare_case(base: dict, other: dict | None) -> dict:
    """The differences between a baseline observation and an enhanced one: {field: (baseline, enhanced)}."""
    if other is None:
        return {"missing": ("ran", "did not run")}
    differences = {}
    for field in COMPARED:
        expected, actual = _comparable(base, field), _comparable(other, field)
        if expected != actual:
            differences[field] = (expected, actual)
    frames = max(_poet_frames(other.get("error")), _poet_frames(other.get("facts")))
    if frames > MAX_POET_FRAMES:
        differences["poet_frames"] = (f"<= {MAX_POET_FRAMES}", frames)
    calls = other.get("calls") or ()
    misreported = [
        call["record"] for call in calls
        if call["record"] and not call["record"]["fell_back"] and not call["enhanced"]
    ]
    if misreported:  # a record claiming an enhanced call that is not this call's (wrong function or status)
        differences["record"] = ("one record naming the call, status ok/error as it ended", misreported)
    if other.get("one_record"):
        numbers = [call["record"]["number"] if call["enhanced"] else None for call in calls]
        gaps = [b - a for a, b in zip(numbers, numbers[1:]) if a is not None and b is not None]
        if any(gap != 1 for gap in gaps):
            differences["records_per_call"] = ("1 record per outer call", gaps)
    return differences


def _narrow(expected, actual):
    """Two differing dicts reduced to the keys that differ (the facts of a case are a dict of facts)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = [key for key in {**expected, **actual} if expected.get(key, "<absent>") != actual.get(key, "<absent>")]
        return ({key: expected.get(key, "<absent>") for key in keys}, {key: actual.get(key, "<absent>") for key in keys})
    return expected, actual


def summarize(baseline: dict, run: dict) -> dict:
    """One policy's run against the baseline: enhanced share, fallbacks, divergences."""
    by_name = {case["case"]: case for case in run.get("cases", ())}
    divergences, fallbacks = [], []
    calls = enhanced = 0
    backends = Counter()
    for base in baseline["cases"]:
        other = by_name.get(base["case"])
        differences = compare_case(base, other)
        if differences:
            divergences.append({
                "case": base["case"],
                "note": base.get("note", ""),
                "differs": {
                    field: dict(zip(("baseline", "enhanced"), _narrow(expected, actual)))
                    for field, (expected, actual) in differences.items()
                },
            })
        # The baseline's calls are the ones that should have run enhanced.
        calls += len(base["calls"])
        for call in (other or {}).get("calls", ())[: len(base["calls"])]:
            if call["enhanced"]:
                enhanced += 1
                backends[call["record"]["backend"]] += 1
            else:
                record = call["record"] or {}
                fallbacks.append({
                    "case": base["case"],
                    "function": call["function"],
                    "reason": record.get("reason") or ("no record" if not record else record.get("status")),
                    "detail": record.get("detail"),
                })
    extra = sorted(set(by_name) - {case["case"] for case in baseline["cases"]})
    for name in extra:
        divergences.append({"case": name, "note": "", "differs": {"extra": {"baseline": None, "enhanced": "ran"}}})
    return {
        "calls": calls,
        "enhanced": enhanced,
        "percent": round(100.0 * enhanced / calls, 1) if calls else 0.0,
        "divergences": divergences,
        "fallbacks": fallbacks,
        "fallback_reasons": dict(Counter(f["reason"] for f in fallbacks).most_common()),
        "backends": dict(backends.most_common()),  # where the enhanced calls ran, by their records
    }


def format_table(summaries: dict, cases: int) -> str:
    lines = [
        f"fidelity: {cases} cases, target 0 divergences and >= {ENHANCED_TARGET:g} % enhanced",
        f"{'policy':<9} {'calls':>6} {'enhanced':>9} {'percent':>8} {'divergent':>10}  "
        f"{'backends':<22} not enhanced (reason x calls)",
    ]
    for policy, summary in summaries.items():
        if "skipped" in summary:
            lines.append(f"{policy:<9} skipped: {summary['skipped']}")
            continue
        reasons = ", ".join(f"{reason} x{count}" for reason, count in summary["fallback_reasons"].items())
        backends = ", ".join(f"{name} x{count}" for name, count in summary["backends"].items())
        lines.append(
            f"{policy:<9} {summary['calls']:>6} {summary['enhanced']:>9} {summary['percent']:>7.1f}% "
            f"{len(summary['divergences']):>10}  {backends or '-':<22} {reasons or '-'}"
        )
        if summary.get("crashed"):
            lines.append(f"{'':<9} the run died: {summary['crashed']}")
    return "\n".join(lines)


def format_divergences(divergences: list, limit: int = 60) -> str:
    out = []
    for divergence in divergences[:limit]:
        out.append(f"- {divergence['case']}" + (f" ({divergence['note']})" if divergence["note"] else ""))
        for field, both in divergence["differs"].items():
            out.append(f"    {field}:")
            out.append(f"      baseline: {_short(both['baseline'])}")
            out.append(f"      enhanced: {_short(both['enhanced'])}")
    if len(divergences) > limit:
        out.append(f"... and {len(divergences) - limit} more (see the JSON report)")
    return "\n".join(out)


def _short(value, width: int = 600) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------- running the suite


def read_observations(path) -> dict:
    """The document a run wrote: header fields, ``cases`` (observations), and ``crashed_in`` when it ended early."""
    document = {"cases": [], "crashed_in": None, "complete": False}
    started = None
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short by a crash
                break
            kind = event.pop("kind")
            if kind == "header":
                document.update(event)
            elif kind == "start":
                started = event["case"]
            elif kind == "observation":
                document["cases"].append(event["observation"])
                started = None
            elif kind == "end":
                document["wall_s"] = event["wall_s"]
                document["complete"] = True
    document["crashed_in"] = None if document["complete"] else started
    return document



def merge(shards: list[dict]) -> dict:
    """The documents of one run's shards as one document."""
    document = {"cases": [], "modules": {}, "complete": True, "crashed_in": [], "exit_code": 0, "process_output": ""}
    for shard in shards:
        for key in ("enabled", "policy", "python"):
            if key in shard:
                document.setdefault(key, shard[key])
                if document[key] != shard[key]:
                    document[key] = f"shards disagree: {document[key]!r} != {shard[key]!r}"
        document["cases"].extend(shard["cases"])
        document["modules"].update(shard.get("modules", {}))
        document["complete"] &= shard["complete"]
        if shard["crashed_in"]:
            document["crashed_in"].append(shard["crashed_in"])
        if shard["exit_code"] != 0:
            document["exit_code"] = shard["exit_code"]
        document["process_output"] += shard["process_output"]
        document["wall_s"] = max(document.get("wall_s", 0), shard.get("wall_s", 0))
    return document


def _run_shard(command: list[str], folder: Path, shard: str) -> subprocess.Popen:
    """Start one process of a run, in its own folder, store and cache."""
    folder.mkdir(parents=True)
    _cache_for(folder)
    environment = child_env(False, PYTHONHASHSEED="0", POET_HOME=str(folder / "home"),
                            POET_CACHE_DIR=str(folder / "cache"), POET_GENERATE="sync")
    with open(folder / "output.txt", "w") as log:
        process = subprocess.Popen(
            [*command, str(RUNNER), "--out", str(folder / "observations.jsonl"), "--shard", shard],
            cwd=str(folder), env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    process.folder = folder
    return process


def _finish(process: subprocess.Popen, deadline: float) -> dict:
    try:
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = "timeout"
    output = (process.folder / "output.txt").read_text(errors="replace")[-4000:]
    path = process.folder / "observations.jsonl"
    document = read_observations(path) if path.is_file() else {"cases": [], "complete": False, "crashed_in": None}
    document.update(exit_code=code, process_output=output)
    if code != 0 and document["complete"]:
        document["complete"] = False  # it wrote everything, then failed on the way out: still a failure
    return document


def _cache_for(tmp: Path) -> None:
    """A fresh cache folder whose ``wasm`` entry is the machine's compiled interpreter (no 60-100 s recompile)."""
    from poet_runtime.backends import wasm_engine

    shared = wasm_engine.cache_dir() / "wasm"
    (tmp / "cache").mkdir(parents=True)
    if shared.is_dir():
        (tmp / "cache" / "wasm").symlink_to(shared, target_is_directory=True)


@pytest.fixture(scope="module")
def fidelity(request, tmp_path_factory):
    """Run the baseline (twice) and every policy at once; returns their documents and the report path."""
    root = tmp_path_factory.mktemp("fidelity")
    skipped = {}
    try:
        request.getfixturevalue("wasm_backend")
    except pytest.skip.Exception as reason:
        skipped["strict"] = str(reason)
    started = time.monotonic()
    processes = {}
    for name in ("plain", "plain_again", *POLICIES):
        if name in skipped:
            continue
        if name.startswith("plain"):
            command = [PYTHON]
        else:
            command = [PYTHON, "-m", "poet_runtime", "--quiet", "--policy", name, "--generate", "sync"]
        count = SHARDS.get(name, 1)
        processes[name] = [_run_shard(command, root / name / f"shard{k}", f"{k}/{count}") for k in range(count)]
    deadline = started + RUN_TIMEOUT_S
    documents = {name: merge([_finish(process, deadline) for process in shards])
                 for name, shards in processes.items()}
    wall = time.monotonic() - started
    failures = {
        name: f"exit {document['exit_code']}" + (f", died in {document['crashed_in']}" if document["crashed_in"] else "")
        + f"\n{document['process_output']}"
        for name, document in documents.items() if not document["complete"]
    }
    summaries = {}
    for policy in POLICIES:
        if policy in skipped:
            summaries[policy] = {"skipped": skipped[policy]}
        else:
            summaries[policy] = summarize(documents["plain"], documents[policy])
            if policy in failures:
                summaries[policy]["crashed"] = failures[policy].splitlines()[0]
    cases = len(documents["plain"]["cases"])
    table = format_table(summaries, cases) + f"\n(all runs at once: {wall:.1f} s wall)"
    report = root / "fidelity.json"
    report.write_text(json.dumps({
        "table": table, "target_percent": ENHANCED_TARGET, "cases": cases, "wall_s": round(wall, 2),
        "policies": summaries, "run_failures": failures,
        "run_wall_s": {name: document.get("wall_s") for name, document in documents.items()},
    }, indent=1, sort_keys=True, default=str))
    return {"documents": documents, "failures": failures, "summaries": summaries, "table": table,
            "report": report, "skipped": skipped}


def test_report(fidelity, capsys):
    """Print the table of enhanced percentages (shown even when the run passes)."""
    with capsys.disabled():
        print(f"\n{fidelity['table']}\nreport: {fidelity['report']}")
    assert fidelity["report"].is_file()


def test_the_baseline_ran_every_case(fidelity):
    """Guards against a vacuous pass: the plain run saw every case file and case, runtime off, logic ran."""
    assert "plain" in fidelity["documents"], fidelity["failures"].get("plain")
    assert "plain" not in fidelity["failures"], fidelity["failures"]["plain"]
    plain = fidelity["documents"]["plain"]
    assert plain["complete"] and plain["exit_code"] == 0
    assert plain["enabled"] is False, "the baseline must run with the runtime off"
    files = sorted(p.stem for p in FIDELITY.glob("cases_*.py"))
    assert sorted(plain["modules"]) == files
    broken = {name: module["error"] for name, module in plain["modules"].items() if module["error"]}
    assert not broken, broken
    empty = [name for name, module in plain["modules"].items() if not module["cases"]]
    assert not empty, f"case modules without cases: {empty}"
    names = [case["case"] for case in plain["cases"]]
    assert len(names) == len(set(names)) >= MIN_CASES
    assert len(names) == sum(module["cases"] for module in plain["modules"].values())
    idle = [case["case"] for case in plain["cases"] if not case["calls"]]
    assert not idle, f"cases that call no @poet function through the observer: {idle}"
    never_ran = [case["case"] for case in plain["cases"] if not case["runs"]]
    assert not never_ran, f"cases whose logic never counted a run (RUNS[...] += 1 missing?): {never_ran}"
    unrecorded = [case["case"] for case in plain["cases"] if any(call["record"] for call in case["calls"])]
    assert not unrecorded, f"with the runtime off nothing may be recorded: {unrecorded}"
    kit_errors = [case["case"] for case in plain["cases"]
                  if case["error"] and case["error"]["type"].startswith(("fidelity_kit", "poet_"))]
    assert not kit_errors, kit_errors


def test_the_baseline_is_deterministic(fidelity):
    """Two plain runs observe the same thing, so that a divergence is never noise of the case itself."""
    documents = fidelity["documents"]
    assert "plain" in documents and "plain_again" in documents, fidelity["failures"]
    summary = summarize(documents["plain"], documents["plain_again"])
    assert not summary["divergences"], "cases that differ between two plain runs:\n" + format_divergences(
        summary["divergences"])


@pytest.mark.parametrize("policy", POLICIES)
def test_enhanced_calls_behave_like_the_original(fidelity, policy):
    if policy in fidelity["skipped"]:
        pytest.skip(fidelity["skipped"][policy])
    assert "plain" in fidelity["documents"], fidelity["failures"].get("plain")
    assert policy in fidelity["documents"], f"the {policy} run failed:\n{fidelity['failures'].get(policy)}"
    document = fidelity["documents"][policy]
    assert document.get("enabled") is True and document.get("policy") == policy, fidelity["failures"].get(policy)
    broken = {name: module["error"] for name, module in document["modules"].items() if module["error"]}
    assert not broken, f"case modules that failed to import under {policy}: {broken}"
    summary = fidelity["summaries"][policy]
    problems = []
    if policy in fidelity["failures"]:
        problems.append(f"the {policy} run did not finish: {fidelity['failures'][policy]}")
    readme = README.read_text(encoding="utf-8")
    documented = [d for d in summary["divergences"] if d["case"] in DOCUMENTED and DOCUMENTED[d["case"]] in readme]
    divergent = [d for d in summary["divergences"] if d not in documented]
    if documented:
        print(f"documented differences under {policy}:\n" + format_divergences(documented))
    if divergent:
        problems.append(f"{len(divergent)} divergent cases under {policy}:\n" + format_divergences(divergent))
    if summary["percent"] < ENHANCED_TARGET:
        reasons = ", ".join(f"{reason} x{count}" for reason, count in summary["fallback_reasons"].items())
        problems.append(f"only {summary['percent']} % of {summary['calls']} calls ran enhanced under {policy} "
                        f"(target {ENHANCED_TARGET:g} %); not enhanced: {reasons}")
    assert not problems, fidelity["table"] + f"\nreport: {fidelity['report']}\n\n" + "\n\n".join(problems)


# ---------------------------------------------------------------- the comparison itself


def _fake_case(name="m.c", **changes):
    call = {"function": "m:f", "raised": None, "record": None, "enhanced": False}
    case = {
        "case": name, "note": "", "one_record": False,
        "facts": {"result": {"type": "builtins.int", "repr": "3"}}, "error": None,
        "stdout": "", "stderr": "", "logs": [], "warnings": [], "runs": {"f": 1}, "calls": [call],
        "elapsed_ms": 1.0,
    }
    case.update(changes)
    return case


def _enhanced_call(number=1, **changes):
    record = {"function": "m:f", "status": "ok", "fell_back": False, "reason": None, "detail": None,
              "backend": "none", "number": number}
    record.update(changes.pop("record", {}))
    call = {"function": "m:f", "raised": None, "record": record, "enhanced": True}
    call.update(changes)
    return call


def test_comparison_reports_a_divergence_with_both_observations():
    base = {"cases": [_fake_case()]}
    same = {"cases": [_fake_case(calls=[_enhanced_call()], elapsed_ms=9.0)]}
    summary = summarize(base, same)
    assert summary["divergences"] == [] and summary["percent"] == 100.0

    converted = {"cases": [_fake_case(facts={"result": {"type": "builtins.float", "repr": "3.0"}},
                                      calls=[_enhanced_call()])]}
    summary = summarize(base, converted)
    assert [d["case"] for d in summary["divergences"]] == ["m.c"]
    differs = summary["divergences"][0]["differs"]
    assert differs == {"facts": {"baseline": {"result": {"type": "builtins.int", "repr": "3"}},
                                 "enhanced": {"result": {"type": "builtins.float", "repr": "3.0"}}}}
    text = format_divergences(summary["divergences"])
    assert "m.c" in text and "builtins.int" in text and "builtins.float" in text

    for field, value in (("stdout", "x\n"), ("stderr", "y"), ("runs", {"f": 2}), ("logs", [["a", "INFO", "m"]]),
                         ("warnings", [["UserWarning", "w", "m.py", 3]]),
                         ("error", {"type": "builtins.ValueError", "args": "()", "frames": []})):
        assert field in summarize(base, {"cases": [_fake_case(**{field: value})]})["divergences"][0]["differs"]
    missing = summarize(base, {"cases": []})
    assert missing["divergences"][0]["differs"] == {"missing": {"baseline": "ran", "enhanced": "did not run"}}
    assert missing["percent"] == 0.0


def test_comparison_counts_a_fallback_against_the_percentage_but_not_as_a_divergence():
    base = {"cases": [_fake_case("m.a"), _fake_case("m.b")]}
    fallback = {"function": "m:f", "raised": None, "enhanced": False,
                "record": {"function": "m:f", "status": "fallback", "fell_back": True, "reason": "unsupported",
                           "detail": None, "backend": None, "number": 2}}
    run = {"cases": [_fake_case("m.a", calls=[_enhanced_call()]), _fake_case("m.b", calls=[fallback])]}
    summary = summarize(base, run)
    assert summary["divergences"] == []
    assert (summary["calls"], summary["enhanced"], summary["percent"]) == (2, 1, 50.0)
    assert summary["fallback_reasons"] == {"unsupported": 1}


def test_comparison_checks_records_and_poet_frames():
    base = {"cases": [_fake_case(one_record=True, calls=[_fake_case()["calls"][0]] * 2)]}
    inner_records = {"cases": [_fake_case(one_record=True, calls=[_enhanced_call(1), _enhanced_call(11)])]}
    assert "records_per_call" in summarize(base, inner_records)["divergences"][0]["differs"]
    one_each = {"cases": [_fake_case(one_record=True, calls=[_enhanced_call(1), _enhanced_call(2)])]}
    assert summarize(base, one_each)["divergences"] == []

    wrong = _enhanced_call(record={"function": "m:g"}, enhanced=False)
    assert "record" in summarize({"cases": [_fake_case()]}, {"cases": [_fake_case(calls=[wrong])]})[
        "divergences"][0]["differs"]

    error = {"type": "m.Oops", "args": "()", "frames": [["cases_m.py", "driver"], ["cases_m.py", "f"]]}
    base = {"cases": [_fake_case(error=error, facts=None)]}
    one = dict(error, frames=[["cases_m.py", "driver"], ["<poet>", "call"], ["cases_m.py", "f"]])
    assert summarize(base, {"cases": [_fake_case(error=one, facts=None)]})["divergences"] == []
    many = dict(error, frames=[["cases_m.py", "driver"], ["<poet>", "a"], ["<poet>", "b"], ["cases_m.py", "f"]])
    assert "poet_frames" in summarize(base, {"cases": [_fake_case(error=many, facts=None)]})[
        "divergences"][0]["differs"]
    elsewhere = dict(error, frames=[["cases_m.py", "driver"], ["<poet>", "f"]])  # the logic ran as a copy
    assert "error" in summarize(base, {"cases": [_fake_case(error=elsewhere, facts=None)]})[
        "divergences"][0]["differs"]
