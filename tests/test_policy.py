"""Policy files: schema errors as file:line: field: message, honesty refusals, rule matching, commands."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poet_runtime.commands import policy as policy_command
from poet_runtime.errors import PoetConfigError
from poet_runtime.policy import PolicyError, load_policy, policy_name_for

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<field>[^:]+): (?P<message>.+)$")


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path) -> list[dict]:
    with pytest.raises(PolicyError) as caught:
        load_policy(str(path))
    parsed = []
    for line in caught.value.errors:
        match = LINE.match(line)
        assert match, f"not in file:line: field: message form: {line!r}"
        assert match["file"].endswith(path.name)
        parsed.append(match.groupdict())
    return parsed


def only(path) -> dict:
    found = errors_of(path)
    assert len(found) == 1, found
    return found[0]


# -- shipped policies ---------------------------------------------------------------

def test_shipped_policies_load_and_are_honest():
    default = load_policy("default").effective_for("app:f")
    assert default.backend == "restricted" and default.uses_workers
    assert default.limits.wall_ms and default.limits.cpu_ms and default.limits.memory_mb and default.limits.max_output_kb
    assert "math" in default.limits.imports and "os" not in default.limits.imports
    assert default.on_violation == "fallback" and default.record_inputs is False
    strict = load_policy("strict").effective_for("app:f")
    assert strict.backend == "wasm" and strict.limits.cpu_ms < default.limits.cpu_ms
    trusted = load_policy("trusted").effective_for("app:f")
    assert trusted.backend == "none" and trusted.limits.wall_ms is None and trusted.limits.imports == ()


def test_unknown_name_is_a_config_error():
    with pytest.raises(PoetConfigError, match="not a shipped policy"):
        load_policy("no-such-policy")


# -- every error class -------------------------------------------------------------------

def test_value_must_be_positive_names_line_and_field(tmp_path):
    path = write(tmp_path, 'version = 1\n\n[defaults]\nbackend = "restricted"\nmemory_mb = 0\n')
    error = only(path)
    assert (error["line"], error["field"], error["message"]) == ("5", "defaults.memory_mb", "must be > 0")


def test_unknown_field_suggests(tmp_path):
    path = write(tmp_path, 'version = 1\n[defaults]\nwal_ms = 10\n[[rule]]\nmatch = "a:*"\nrecord_input = true\n')
    found = errors_of(path)
    assert [(e["line"], e["field"]) for e in found] == [("3", "defaults.wal_ms"), ("6", "rule[0].record_input")]
    assert "did you mean 'wall_ms'?" in found[0]["message"]
    assert "did you mean 'record_inputs'?" in found[1]["message"]


def test_unknown_table_suggests(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[default]\nbackend = "none"\n'))
    assert error["field"] == "default" and "did you mean 'defaults'?" in error["message"]


def test_wrong_types_and_choices(tmp_path):
    path = write(tmp_path, 'version = 1\n[defaults]\nbackend = "docker"\non_violation = "ignore"\n'
                           'wall_ms = "fast"\nimports = "math"\nrecord_inputs = "yes"\n')
    found = {e["field"]: e for e in errors_of(path)}
    assert found["defaults.backend"]["line"] == "3" and "'restricted'" in found["defaults.backend"]["message"]
    assert found["defaults.on_violation"]["line"] == "4"
    assert found["defaults.wall_ms"]["line"] == "5" and "positive integer" in found["defaults.wall_ms"]["message"]
    assert found["defaults.imports"]["line"] == "6"
    assert found["defaults.record_inputs"]["line"] == "7"


def test_boolean_true_is_not_a_limit(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\ncpu_ms = true\n'))
    assert error["field"] == "defaults.cpu_ms"


def test_syntax_error_has_line(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\nwall_ms = = 3\n'))
    assert error["line"] == "3" and error["field"] == "(syntax)"


def test_missing_version_and_match(tmp_path):
    found = errors_of(write(tmp_path, '[defaults]\nbackend = "none"\n[[rule]]\nbackend = "none"\n'))
    fields = {e["field"]: e for e in found}
    assert fields["version"]["message"] == "is required"
    assert fields["rule[0].match"]["line"] == "3"  # the rule's header: the key is absent


def test_unsafe_import_and_builtin_refused(tmp_path):
    path = write(tmp_path, 'version = 1\n[defaults]\nimports = ["math", "os.path"]\nbuiltins = ["eval"]\n')
    found = {e["field"]: e for e in errors_of(path)}
    assert "os.path" in found["defaults.imports"]["message"] and "files" in found["defaults.imports"]["message"]
    assert "eval" in found["defaults.builtins"]["message"]


def test_a_module_not_reviewed_for_generated_code_is_refused_at_policy_load(tmp_path):
    # calendar is harmless-looking, but nobody reviewed it for gadgets: not on the allow-list
    path = write(tmp_path, 'version = 1\n[defaults]\nimports = ["math", "calendar"]\n')
    message = only(path)["message"]
    assert "'calendar'" in message and "reviewed" in message and "math" in message  # names the allowed ones


def test_second_rule_error_points_at_second_rule(tmp_path):
    text = 'version = 1\n[[rule]]\nmatch = "a:*"\nwall_ms = 5\n\n[[rule]]\nmatch = "b:*"\nwall_ms = -5\n'
    error = only(write(tmp_path, text))
    assert (error["line"], error["field"]) == ("8", "rule[1].wall_ms")


# -- honesty ---------------------------------------------------------------------------

def test_none_backend_cannot_state_limits(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\nbackend = "none"\nwall_ms = 100\n'))
    assert error["line"] == "4" and error["field"] == "defaults.wall_ms"
    assert "backend 'none' cannot enforce wall_ms" in error["message"]


def test_none_backend_cannot_state_imports(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\nbackend = "none"\nimports = []\n'))
    assert "cannot enforce imports" in error["message"]


def test_rule_switching_to_none_must_clear_inherited_limits(tmp_path):
    text = ('version = 1\n[defaults]\nbackend = "restricted"\nmax_output_kb = 8\n'
            '[[rule]]\nmatch = "trusted.*"\nbackend = "none"\n')
    error = only(write(tmp_path, text))
    assert error["field"] == "rule[0].backend" and "max_output_kb" in error["message"]
    fixed = write(tmp_path, text + "max_output_kb = false\n", name="fixed.toml")
    effective = load_policy(str(fixed)).effective_for("trusted.mod:f")
    assert effective.backend == "none" and effective.limits.max_output_kb is None


def test_combination_of_rules_is_checked_when_matched(tmp_path):
    text = ('version = 1\n[defaults]\nbackend = "restricted"\n'
            '[[rule]]\nmatch = "app.*"\nbackend = "none"\n'
            '[[rule]]\nmatch = "app.slow:*"\nwall_ms = 500\n')
    policy = load_policy(str(write(tmp_path, text)))
    assert policy.effective_for("app.fast:f").backend == "none"
    with pytest.raises(PolicyError) as caught:
        policy.effective_for("app.slow:f")
    line = caught.value.errors[0]
    assert LINE.match(line) and ":9: rule[1].wall_ms: backend 'none' cannot enforce wall_ms" in line


def test_restricted_limits_route_to_workers(tmp_path):
    policy = load_policy(str(write(tmp_path, 'version = 1\n[defaults]\nbackend = "restricted"\nmax_output_kb = 4\n'
                                             '[[rule]]\nmatch = "heavy"\ncpu_ms = 50\n')))
    assert not policy.effective_for("light:f").uses_workers
    assert policy.effective_for("heavy:f").uses_workers


# -- matching ----------------------------------------------------------------------------

def test_last_matching_rule_wins_per_field(tmp_path):
    text = ('version = 1\n[defaults]\nbackend = "restricted"\nwall_ms = 1000\ncpu_ms = 900\nimports = ["math"]\n'
            '[[rule]]\nmatch = "app.*"\nwall_ms = 2000\nimports = ["json"]\n'
            '[[rule]]\nmatch = "app.billing:Invoice.*"\nwall_ms = 3000\non_violation = "raise"\n')
    policy = load_policy(str(write(tmp_path, text)))
    hit = policy.effective_for("app.billing:Invoice.total")
    assert hit.limits.wall_ms == 3000 and hit.limits.cpu_ms == 900 and hit.limits.imports == ("json",)
    assert hit.on_violation == "raise"
    assert hit.sources["wall_ms"].startswith("rule[1]") and hit.sources["imports"].startswith("rule[0]")
    assert hit.sources["cpu_ms"] == "defaults" and hit.sources["record_inputs"] == "built-in"
    other = policy.effective_for("app.billing:pay")
    assert other.limits.wall_ms == 2000 and other.on_violation == "fallback"
    assert policy.effective_for("lib:f").limits.wall_ms == 1000
    assert policy.effective_for("application:f").limits.wall_ms == 1000  # "app.*" needs the dot


def test_cache_follows_mtime(tmp_path):
    path = write(tmp_path, 'version = 1\n[defaults]\nwall_ms = 100\n')
    first = load_policy(str(path))
    assert load_policy(str(path)) is first
    path.write_text('version = 1\n[defaults]\nwall_ms = 200\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_policy(str(path)).effective_for("a:b").limits.wall_ms == 200


# -- which policy ------------------------------------------------------------------------

def test_policy_name_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("POET_POLICY", raising=False)
    project = tmp_path / "proj"
    (project / "src" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[tool.poet]\npolicy = "policies/mine.toml"\n')
    monkeypatch.chdir(project / "src" / "deep")
    assert policy_name_for(None) == str((project / "policies/mine.toml").resolve())
    monkeypatch.setenv("POET_POLICY", "strict")
    assert policy_name_for(None) == "strict"
    assert policy_name_for("trusted") == "trusted"
    monkeypatch.delenv("POET_POLICY")
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert policy_name_for(None) == "default"


# -- commands ----------------------------------------------------------------------------

def run_handler(argv, capsys):
    parser = argparse.ArgumentParser()
    policy_command.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.handler(args)
    return code, capsys.readouterr().out


def test_check_command(tmp_path, capsys):
    good = write(tmp_path, 'version = 1\n[defaults]\nbackend = "restricted"\n', "good.toml")
    bad = write(tmp_path, 'version = 1\n[defaults]\nbackend = "none"\ncpu_ms = 10\nmemry_mb = 3\n', "bad.toml")
    code, out = run_handler(["policy", "check", str(good)], capsys)
    assert code == 0 and "ok" in out
    code, out = run_handler(["policy", "check", str(good), str(bad)], capsys)
    assert code == 1
    lines = [line for line in out.splitlines() if "bad.toml" in line]
    assert len(lines) == 1 and ":5: defaults.memry_mb: unknown field; did you mean 'memory_mb'?" in lines[0]


def app_package(tmp_path, monkeypatch):
    """``policy explain`` names functions that exist: an ``app`` package with ``f`` in app, app.other, app.safe."""
    package = tmp_path / "src" / "app"
    package.mkdir(parents=True)
    for name in ("__init__", "other", "safe"):
        (package / f"{name}.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))


def test_explain_command(tmp_path, capsys, monkeypatch):
    app_package(tmp_path, monkeypatch)
    path = write(tmp_path, 'version = 1\n[defaults]\nbackend = "restricted"\nwall_ms = 100\n'
                           '[[rule]]\nmatch = "app:*"\nwall_ms = 300\n')
    code, out = run_handler(["policy", "explain", "app:f", "--policy", str(path)], capsys)
    assert code == 0
    wall = next(line for line in out.splitlines() if line.strip().startswith("wall_ms"))
    assert "300" in wall and "rule[0] (match 'app:*')" in wall
    assert "worker process" in out


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "poet_runtime.commands.policy", "check", "default", "trusted"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == 2


# -- trust -------------------------------------------------------------------------------

def test_trust_defaults_to_builtin_and_shipped_values(tmp_path):
    plain = load_policy(str(write(tmp_path, 'version = 1\n[defaults]\nbackend = "wasm"\n'))).effective_for("a:f")
    assert plain.trust == ("builtin",) and isinstance(plain.trust, tuple) and plain.sources["trust"] == "built-in"
    default = load_policy("default").effective_for("app:f")
    assert default.trust == ("builtin",) and default.sources["trust"] == "defaults"  # stated explicitly
    strict = load_policy("strict").effective_for("app:f")
    assert strict.trust == () and strict.sources["trust"] == "defaults"
    assert load_policy("trusted").effective_for("app:f").trust == ("builtin",)


def test_trust_parses_in_defaults_and_rules_last_rule_wins(tmp_path):
    text = ('version = 1\n[defaults]\nbackend = "wasm"\ntrust = []\n'
            '[[rule]]\nmatch = "app.*"\ntrust = ["builtin"]\n'
            '[[rule]]\nmatch = "app.secret:*"\ntrust = []\n'
            '[[rule]]\nmatch = "app.reset:*"\ntrust = false\n')
    policy = load_policy(str(write(tmp_path, text)))
    assert policy.effective_for("lib:f").trust == () and policy.effective_for("lib:f").sources["trust"] == "defaults"
    app = policy.effective_for("app.billing:total")
    assert app.trust == ("builtin",) and app.sources["trust"] == "rule[0] (match 'app.*')"
    secret = policy.effective_for("app.secret:key")
    assert secret.trust == () and secret.sources["trust"].startswith("rule[1]")
    reset = policy.effective_for("app.reset:f")  # false = not stated, which for trust is the built-in default
    assert reset.trust == ("builtin",) and reset.sources["trust"].startswith("rule[2]")
    assert policy.effective_for("app.billing:total") is app  # cached: effective_for stays cheap


def test_trust_duplicates_collapse(tmp_path):
    policy = load_policy(str(write(tmp_path, 'version = 1\n[defaults]\ntrust = ["builtin", "builtin"]\n')))
    assert policy.effective_for("a:f").trust == ("builtin",)


def test_trust_refuses_unverifiable_generators(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\nbackend = "wasm"\n\ntrust = ["builtin", "llm"]\n'))
    assert (error["line"], error["field"]) == ("5", "defaults.trust")
    assert "'llm'" in error["message"]
    assert "only the built-in generator's versions can be verified by regeneration" in error["message"]
    text = 'version = 1\n[[rule]]\nmatch = "a:*"\ntrust = []\n[[rule]]\nmatch = "b:*"\ntrust = ["openai/gpt-4.1"]\n'
    error = only(write(tmp_path, text, name="rule.toml"))
    assert (error["line"], error["field"]) == ("7", "rule[1].trust") and "'openai/gpt-4.1'" in error["message"]


def test_trust_wrong_types(tmp_path):
    error = only(write(tmp_path, 'version = 1\n[defaults]\ntrust = "builtin"\n'))
    assert (error["line"], error["field"]) == ("3", "defaults.trust")
    assert "list of generator names" in error["message"] and "verified by regeneration" in error["message"]
    error = only(write(tmp_path, 'version = 1\n[defaults]\ntrust = true\n', name="bool.toml"))
    assert error["field"] == "defaults.trust"
    error = only(write(tmp_path, 'version = 1\n[defaults]\ntrusts = []\n', name="typo.toml"))
    assert error["field"] == "defaults.trusts" and "did you mean 'trust'?" in error["message"]


def test_trust_is_not_a_limit_none_backend_may_state_it(tmp_path):
    text = ('version = 1\n[defaults]\nbackend = "none"\ntrust = []\n'
            '[[rule]]\nmatch = "app:*"\ntrust = ["builtin"]\n')
    policy = load_policy(str(write(tmp_path, text)))  # not refused: it limits nothing
    assert policy.effective_for("lib:f").trust == () and policy.effective_for("app:f").trust == ("builtin",)


def test_check_command_reports_bad_trust(tmp_path, capsys):
    bad = write(tmp_path, 'version = 1\n[defaults]\ntrust = ["gpt"]\n', "bad.toml")
    code, out = run_handler(["policy", "check", str(bad), "strict"], capsys)
    assert code == 1
    assert ":3: defaults.trust: cannot trust 'gpt'" in out and "strict.toml: ok" in out


def trust_lines(out):
    row = next(line for line in out.splitlines() if re.match(r"\s+trust\s+\S", line) and "<-" in line)
    meaning = [line for line in out.splitlines() if line.strip().startswith("trust:")]
    assert len(meaning) == 1, out
    return row, meaning[0]


def test_explain_shows_trust_and_its_meaning(tmp_path, capsys, monkeypatch):
    app_package(tmp_path, monkeypatch)
    path = write(tmp_path, 'version = 1\n[defaults]\nbackend = "restricted"\nwall_ms = 100\n'
                           '[[rule]]\nmatch = "app.safe:*"\ntrust = []\n')
    code, out = run_handler(["policy", "explain", "app.other:f", "--policy", str(path)], capsys)
    assert code == 0
    row, meaning = trust_lines(out)
    assert "builtin" in row and "<- built-in" in row
    assert ("built-in versions verified by regeneration run in-process; anything else runs in restricted "
            "(a worker process)") in meaning
    code, out = run_handler(["policy", "explain", "app.safe:f", "--policy", str(path)], capsys)
    row, meaning = trust_lines(out)
    assert "(none)" in row and "rule[0] (match 'app.safe:*')" in row
    assert "every version, even a verified built-in one, runs in restricted" in meaning


def test_explain_strict_and_trusted(tmp_path, capsys, monkeypatch):
    app_package(tmp_path, monkeypatch)
    code, out = run_handler(["policy", "explain", "app:f", "--policy", "strict"], capsys)
    row, meaning = trust_lines(out)
    assert code == 0 and "(none)" in row and "<- defaults" in row
    assert "runs in wasm" in meaning and "crosses back to the host" in meaning
    code, out = run_handler(["policy", "explain", "app:f", "--policy", "trusted"], capsys)
    row, meaning = trust_lines(out)
    assert code == 0 and "trusts everything in effect" in meaning  # said, not refused
