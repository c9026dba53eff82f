"""Damaged version files are reported once, by file and field, and repaired (issue 12, item 4).

One small app with one function per kind of damage runs three times as a real subprocess
(``python -m poet_runtime app.py``): the first run stores v1 of each function; the files
are then damaged the ways a crash, a bad tool or a hand edit would; the second run must
answer exactly as the originals do, name each damaged file and field once, and store a
repaired v2 (the runtime owns these files); the third run must be quiet and serve v2.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# name -> how its v1 is damaged: (file, new text or a function of the old text), and what the report must name.
DAMAGE = {
    "nan_retries": ("params.json", lambda t: t.replace('"retries": 2', '"retries": NaN'), "params.json: retries: must be a finite number"),
    "nan_delay": ("params.json", lambda t: t.replace('"retry_base_delay_s": 0.05', '"retry_base_delay_s": -Infinity'),
                  "params.json: retry_base_delay_s: must be a finite number"),
    "garbage": ("params.json", lambda t: "\x00\x17garbage{", "params.json: is not valid JSON"),
    "truncated": ("params.json", lambda t: t[: len(t) // 2], "params.json: is not valid JSON"),
    "wrong_types": ("params.json", lambda t: t.replace('"breaker_threshold": 5', '"breaker_threshold": "five"'),
                    "params.json: breaker_threshold: must be a number, not a string"),
    "out_of_range": ("params.json", lambda t: t.replace('"retries": 2', '"retries": 1000000'),
                     "params.json: retries: 1000000 is outside its range [0, 10]"),
    "not_whole": ("params.json", lambda t: t.replace('"retries": 2', '"retries": 2.5'),
                  "params.json: retries: must be a whole number"),
    "params_list": ("params.json", lambda t: "[1, 2, 3]\n", "params.json: must be a JSON object, not a list"),
    "metadata_list": ("metadata.json", lambda t: "[]\n", "metadata.json: must be a JSON object, not a list"),
    "metadata_field": ("metadata.json", lambda t: t.replace('"parameters": {', '"parameters": 7, "was": {', 1),
                       "metadata.json: parameters: must be an object, not a number"),
    "syntax": ("code.py", lambda t: t.replace("def enforce(", "def oops(:\n    pass\n\n\ndef enforce(", 1),
               "code.py: line "),
}


def app_source() -> str:
    lines = ["import json", "import poet_runtime", "from poet_runtime import poet", "", "out = {}"]
    for name in DAMAGE:
        lines += ["", "", '@poet(domain="ml_monitoring", retries=2)',
                  f"def {name}(values: list[float], threshold: float = 0.5) -> dict:",
                  "    mean = sum(values) / len(values)",
                  '    return {"high": mean > threshold, "mean": round(mean, 4)}',
                  "", "",
                  f"out[{name!r}] = [{name}([0.1, 0.2]), {name}([0.9, 1.0])]",
                  f"rec = poet_runtime.last_execution()",
                  f"out[{name!r}].append([rec.version, rec.fell_back])"]
    lines += ["print(json.dumps(out))"]
    return "\n".join(lines) + "\n"


EXPECTED = [{"high": False, "mean": 0.15}, {"high": True, "mean": 0.95}]


def run(tmp_path: Path) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(tmp_path / "home"), POET_CACHE_DIR=str(tmp_path / "cache"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), POET_POLICY="trusted")
    result = subprocess.run([sys.executable, "-m", "poet_runtime", "app.py"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    (root / "app.py").write_text(app_source())
    first, _ = run(root)
    assert all(first[name][:2] == EXPECTED and first[name][2] == [1, False] for name in DAMAGE), first
    for name, (filename, change, _) in DAMAGE.items():
        path = root / "home" / f"app.{name}" / "v1" / filename
        text = path.read_text()
        changed = change(text)
        assert changed != text, (name, "the damage did not apply: the stored file changed shape")
        path.write_text(changed)
    second = run(root)
    third = run(root)
    return root, second, third


@pytest.mark.parametrize("name", list(DAMAGE))
def test_each_damage_is_reported_once_by_file_and_field_and_repaired_as_v2(runs, name):
    root, (output, stderr), (again, quiet) = runs
    assert output[name][:2] == EXPECTED  # what the original answers, in the very run that found the damage
    assert output[name][2] == [2, False], output[name]  # and served by the repaired version
    expected = DAMAGE[name][2]
    path = root / "home" / f"app.{name}" / "v1" / DAMAGE[name][0]
    lines = [line for line in stderr.splitlines() if str(path) in line and "damaged" in line]
    assert len(lines) == 1, stderr
    assert expected.split(": ", 1)[1] in lines[0], lines[0]
    assert again[name] == EXPECTED + [[2, False]]  # the next run: v2, nothing to report
    assert "damaged" not in quiet, quiet


def test_repaired_values_are_the_declared_defaults_and_the_rest_is_kept(runs):
    root = runs[0]
    params = json.loads((root / "home" / "app.nan_retries" / "v2" / "params.json").read_text())
    assert params["retries"] == 2 and all(math.isfinite(v) for v in params.values())
    meta = json.loads((root / "home" / "app.nan_retries" / "v2" / "metadata.json").read_text())
    assert meta["repaired_from"] == 1 and "retries" in meta["repair"][0]


def test_the_stores_json_readers_raise_damaged_file_naming_path_and_field(tmp_path):
    from poet_runtime.store import DamagedFile, read_json

    path = tmp_path / "state.json"
    for text, field, reason in (('{"a": {"b": NaN}}', "a.b", "finite"), ("{", None, "not valid JSON"),
                                ("[]", None, "not a list"), ("", None, "empty")):
        path.write_text(text)
        with pytest.raises(DamagedFile) as caught:
            read_json(path)
        assert isinstance(caught.value, ValueError) and caught.value.path == str(path)
        assert caught.value.field == field and reason in str(caught.value)
