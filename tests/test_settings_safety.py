"""Settings never kill the program (issue 12, items 3 and 13), in real activated processes.

With ``POET_ENABLED=1`` (the ``.pth`` activation, then ``import poet_runtime``), one bad
value prints ONE line naming the variable or key, and the program runs to its own exit
status with POET off. Only ``python -m poet_runtime`` and the CLI exit with status 2.
A policy that does not exist is found at start-up or decoration, once, not on every
call. ``POET_LOG`` is honoured in an activated process, not only by the runner.
"""

from __future__ import annotations

import math

import pytest

import subprocess
from pathlib import Path

from hook_helpers import REPO, pth_python, run, write_tree

pytestmark = pytest.mark.slow

APP = """
import sys
import poet_runtime
print("ran", poet_runtime.is_enabled())
sys.exit(5)
"""


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    return pth_python(tmp_path_factory.mktemp("pth"))


def _in_parallel(function, cases) -> list:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(function, cases))


def _one_line_about(stderr: str, name: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert name in lines[0], stderr
    return lines[0]


BAD_ENVIRONMENT = [
    ("POET_LOG", "verbose"),
    ("POET_GENERATE", "x"),
    ("POET_GENERATION_TIMEOUT", "abc"),
    ("POET_GENERATION_TIMEOUT", "nan"),
    ("POET_GENERATION_TIMEOUT", "inf"),
    ("POET_GENERATION_TIMEOUT", "-1"),
    ("POET_MAX_CONCURRENT_GENERATIONS", "0"),
    ("POET_MAX_CONCURRENT_GENERATIONS", "2.5"),
    ("POET_MAX_CONCURRENT_GENERATIONS", "1e999"),
    ("POET_POLICY", "nosuch"),
    ("POET_POLICY", "missing/policy.toml"),
    ("POET_WASM_MAX_GUESTS", "abc"),
    ("POET_WASM_FUEL_PER_MS", "0"),
]


def test_a_bad_environment_value_is_one_line_and_the_program_runs_without_poet(tmp_path, python):
    write_tree(tmp_path, {"app.py": APP})
    results = _in_parallel(lambda case: run(["app.py"], tmp_path, python=python, POET_ENABLED="1",
                                            **{case[0]: case[1]}), BAD_ENVIRONMENT)
    for (variable, value), result in zip(BAD_ENVIRONMENT, results):
        assert result.returncode == 5, (variable, value, result.stderr)
        assert result.stdout.strip() == "ran False", (variable, value, result.stderr)
        line = _one_line_about(result.stderr, variable)
        assert repr(value) in line and "continuing without POET" in line, line


BAD_PYPROJECT = [
    ("genrate = 'sync'", "genrate"),  # unknown key
    ("generate = 3", "generate"),  # wrong type
    ("log = 'verbose'", "log"),
    ("max_concurrent_generations = true", "max_concurrent_generations"),
    ("max_concurrent_generations = 2.5", "max_concurrent_generations"),
    ("generation_timeout = nan", "generation_timeout"),
    ("generation_timeout = inf", "generation_timeout"),
    ("generation_timeout = 0", "generation_timeout"),
    ("policy = 'policies/missing.toml'", "policy"),
    ("policy = [1, 2", "pyproject.toml"),  # not TOML at all
]


def test_a_bad_pyproject_key_or_type_is_one_line_and_the_program_runs_without_poet(tmp_path, python):
    def case(index: int):
        folder = write_tree(tmp_path / str(index), {"app.py": APP})
        (folder / "pyproject.toml").write_text(f"[tool.poet]\n{BAD_PYPROJECT[index][0]}\n")
        return run(["app.py"], folder, python=python, POET_ENABLED="1")

    for (text, name), result in zip(BAD_PYPROJECT, _in_parallel(case, range(len(BAD_PYPROJECT)))):
        assert result.returncode == 5, (text, result.stderr)
        assert result.stdout.strip() == "ran False", (text, result.stderr)
        assert "continuing without POET" in _one_line_about(result.stderr, name)


def test_good_settings_still_turn_poet_on(tmp_path, python):
    write_tree(tmp_path, {"app.py": APP, "policies/mine.toml": '[defaults]\nbackend = "none"\n'})
    (tmp_path / "pyproject.toml").write_text("[tool.poet]\npolicy = 'policies/mine.toml'\ngeneration_timeout = 30\n")
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_GENERATION_TIMEOUT="1e3")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (5, "ran True", "")
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_POLICY="strict")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (5, "ran True", "")


def test_the_runner_and_the_cli_exit_with_2_naming_the_variable(tmp_path, python):
    write_tree(tmp_path, {"app.py": APP})
    for args in (["app.py"], ["status"]):
        for extra in ({"POET_ENABLED": "1"}, {}):
            result = run(["-m", "poet_runtime", *args], tmp_path, python=python, POET_LOG="verbose", **extra)
            assert result.returncode == 2, (args, extra, result.stderr)
            assert result.stdout == ""
            _one_line_about(result.stderr, "POET_LOG")
    (tmp_path / "pyproject.toml").write_text("[tool.poet]\ngenrate = 'sync'\n")
    result = run(["-m", "poet_runtime", "status"], tmp_path, python=python)
    assert result.returncode == 2 and "genrate" in _one_line_about(result.stderr, "did you mean")


# A program whose one function names its policy in the decorator (what POET does with it is the test).
POLICY_APP = """
    import poet_runtime
    from poet_runtime import poet

    @poet(policy="{policy}")
    def add_one(x):
        return x + 1

    print([add_one(i) for i in range(5)], hasattr(add_one, "__poet__"), poet_runtime.is_enabled())
"""


def test_a_missing_decorator_policy_is_one_line_at_decoration_not_a_fallback_per_call(tmp_path, python):
    write_tree(tmp_path, {"app.py": POLICY_APP.format(policy="nosuch")})
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_HOME=str(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 2, 3, 4, 5] False True"
    line = _one_line_about(result.stderr, "@poet on __main__:add_one")
    assert "'nosuch'" in line and "default, strict, trusted" in line
    # With POET off the decorator returns the function untouched and checks nothing.
    result = run(["app.py"], tmp_path, python=python)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "[1, 2, 3, 4, 5] False False", "")


LOGGING_APP = """
import logging
import poet_runtime
from poet_runtime import poet

@poet
async def numbers():  # an async generator: left as it is, said at info level
    yield 1

logging.getLogger("poet_runtime").warning("poet_runtime: a warning of ours")
print("ran", poet_runtime.is_enabled())
"""


def test_poet_log_is_honoured_in_an_activated_process(tmp_path, python):
    write_tree(tmp_path, {"app.py": LOGGING_APP})
    quiet = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_LOG="quiet")
    assert (quiet.returncode, quiet.stdout.strip(), quiet.stderr) == (0, "ran True", "")
    default = run(["app.py"], tmp_path, python=python, POET_ENABLED="1")
    assert default.stderr.splitlines() == ["poet_runtime: a warning of ours"]
    info = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_LOG="info")
    assert info.returncode == 0, info.stderr
    assert "async generator function" in info.stderr and "a warning of ours" in info.stderr
    error = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_LOG="error")
    assert error.stderr == ""


def test_numeric_settings_reject_nan_infinity_and_out_of_range(tmp_path):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.settings import load_settings

    for variable, value in [("POET_GENERATION_TIMEOUT", v) for v in ("nan", "inf", "-inf", "0", "-1", "1e9")] + [
        ("POET_MAX_CONCURRENT_GENERATIONS", v) for v in ("0", "-3", "2.5", "nan", "10000000", "true")
    ]:
        with pytest.raises(PoetConfigError, match=variable):
            load_settings({variable: value}, cwd=tmp_path)
    settings = load_settings({"POET_GENERATION_TIMEOUT": "2.5", "POET_MAX_CONCURRENT_GENERATIONS": "8"}, cwd=tmp_path)
    assert settings.generation_timeout == 2.5 and settings.max_concurrent_generations == 8
    assert math.isfinite(load_settings({}, cwd=tmp_path).generation_timeout)


def test_broker_and_service_urls_are_checked_at_start_up(tmp_path):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.settings import load_settings

    for variable, value in [("POET_BROKER", "localhost:6379"), ("POET_BROKER", "http://h/0"), ("POET_BROKER", "unix://"),
                            ("POET_SERVICE_URL", "127.0.0.1:8477"), ("POET_SERVICE_URL", "ftp://h")]:
        with pytest.raises(PoetConfigError, match=variable):
            load_settings({variable: value}, cwd=tmp_path)
    settings = load_settings({"POET_BROKER": "redis://127.0.0.1:6379/0", "POET_SERVICE_URL": "http://127.0.0.1:8477/"},
                             cwd=tmp_path)
    assert settings.broker == "redis://127.0.0.1:6379/0" and settings.service_url == "http://127.0.0.1:8477"
    assert "6379" not in repr(settings)  # a broker URL may hold a password
    (tmp_path / "pyproject.toml").write_text('[tool.poet]\nservice_key = "k"\n')
    with pytest.raises(PoetConfigError, match="service_key: unknown setting"):  # secrets: environment only
        load_settings({}, cwd=tmp_path)


def test_a_broker_without_the_redis_package_is_one_line_and_the_program_runs_without_poet(tmp_path):
    """A machine without the [fleet] extra: an interpreter whose import system has no redis."""
    import site
    import venv

    from poet_runtime.hook.activate import PTH_LINE, PTH_NAME

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    python = str(target / "bin" / "python")
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # .pth files run in name order: the finder that refuses redis is in place before ours activates.
    (purelib / "_a_no_redis.pth").write_text(
        "import sys; sys.meta_path.insert(0, type('NoRedis', (), {'find_spec': staticmethod(lambda name, *a: "
        "(_ for _ in ()).throw(ModuleNotFoundError(name)) if name.split('.')[0] == 'redis' else None)}))\n")
    (purelib / "_b_paths.pth").write_text("\n".join([str(REPO), *site.getsitepackages()]) + "\n")
    (purelib / PTH_NAME).write_text(PTH_LINE)
    write_tree(tmp_path, {"app.py": APP})
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_BROKER="redis://127.0.0.1:1/0")
    assert result.returncode == 5, result.stderr
    assert result.stdout.strip() == "ran False", result.stderr
    line = _one_line_about(result.stderr, "POET_BROKER")
    assert "poet-runtime[fleet]" in line and "continuing without POET" in line, line


def test_backend_tuning_variables_are_checked_at_start_up_and_never_raise_at_import(tmp_path, monkeypatch):
    from poet_runtime.backends.wasm_instance import env_int
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.settings import load_settings

    for variable in ("POET_WASM_MAX_GUESTS", "POET_WASM_FUEL_PER_MS"):
        for value in ("abc", "0", "-5", "nan", "1e999", "2.5"):
            with pytest.raises(PoetConfigError, match=variable):
                load_settings({variable: value}, cwd=tmp_path)
            monkeypatch.setenv(variable, value)
            assert env_int(variable, 7, 1, 100) == 7  # the backend keeps its default
        monkeypatch.setenv(variable, "12")
        assert env_int(variable, 7, 1, 100) == 12
        assert load_settings({variable: "12"}, cwd=tmp_path).enabled is False


def test_the_wasm_compile_notice_honours_a_quiet_log(capsys):
    import logging

    from poet_runtime.backends import wasm_engine

    logger = logging.getLogger("poet_runtime")
    previous = logger.level
    try:
        logger.setLevel(51)  # POET_LOG=quiet
        wasm_engine._stderr_progress("poet_runtime: compiling the WASM sandbox")
        assert capsys.readouterr().err == ""
        logger.setLevel(logging.WARNING)
        wasm_engine._stderr_progress("poet_runtime: compiling the WASM sandbox")
        assert "compiling" in capsys.readouterr().err
    finally:
        logger.setLevel(previous)


LEARNING_APP = """
import os, sys
import poet_runtime
from poet_runtime import poet

@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}

print([detect(s)["drift_detected"] for s in (0.2, 0.9)], poet_runtime.is_enabled())
sys.exit(5)
"""

BAD_LEARNING = [
    ("POET_EVENTS_RETENTION_DAYS", "-1"),
    ("POET_EVENTS_RETENTION_DAYS", "0"),
    ("POET_EVENTS_RETENTION_DAYS", "nan"),
    ("POET_EVENTS_RETENTION_DAYS", "inf"),
    ("POET_EVENTS_FLUSH_MS", "nan"),
    ("POET_EVENTS_FLUSH_MS", "-5"),
    ("POET_EVENTS_SAMPLE", "1.5"),
    ("POET_EVENTS_SAMPLE", "nan"),
    ("POET_EVENTS_MAX_MB", "-1"),
    ("POET_EVENTS_MAX_MB", "inf"),
    ("POET_EVENTS_MAX_MB", "lots"),
    ("POET_FEEDBACK_RATE", "nan"),
    ("POET_FEEDBACK_RATE", "inf"),
    ("POET_EVENTS", "maybe"),
]


def test_a_bad_learning_setting_is_one_line_poet_off_and_no_event_file_is_deleted(tmp_path, python):
    home = tmp_path / "home"
    kept = home / "events" / "processed" / "fb-ev-0123456789ab-1.jsonl"  # acknowledged feedback
    kept.parent.mkdir(parents=True)
    kept.write_text("feedback\n")
    import os
    import time

    old = time.time() - 3 * 86400
    os.utime(kept, (old, old))
    write_tree(tmp_path, {"app.py": LEARNING_APP})
    results = _in_parallel(lambda case: run(["app.py"], tmp_path, python=python, POET_ENABLED="1",
                                            POET_HOME=str(home), **{case[0]: case[1]}), BAD_LEARNING)
    for (variable, value), result in zip(BAD_LEARNING, results):
        assert result.returncode == 5, (variable, value, result.stderr)
        assert result.stdout.strip() == "[False, True] False", (variable, value, result.stderr)
        line = _one_line_about(result.stderr, variable)
        assert repr(value) in line and "continuing without POET" in line, line
        assert kept.exists(), (variable, value)
    good = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_HOME=str(home),
               POET_EVENTS_RETENTION_DAYS="7", POET_EVENTS_MAX_MB="64", POET_EVENTS_FLUSH_MS="50")
    assert (good.returncode, good.stdout.strip(), good.stderr) == (5, "[False, True] True", "")


def test_learning_settings_reject_nan_infinity_negatives_and_out_of_range(monkeypatch):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.learn import config

    try:
        for variable, value in BAD_LEARNING:
            monkeypatch.setenv(variable, value)
            config.reset()
            with pytest.raises(PoetConfigError, match=variable):
                config.get()
            monkeypatch.delenv(variable)
        for change in ({"retention_days": -1.0}, {"max_mb": math.nan}, {"feedback_rate": math.inf}):
            with pytest.raises(PoetConfigError):
                config.override(**change)
        monkeypatch.setenv("POET_EVENTS_MAX_MB", "64")
        config.reset()
        assert config.get().max_mb == 64.0
    finally:
        config.reset()


@pytest.mark.parametrize("text, field", [
    ('version = 1\n[defaults]\nbackend = "nope"\n', "backend"),
    ("version = 1\n[defaults\n", "(syntax)"),
    ('version = 1\n[defaults]\nbackend = "none"\nmemory_mb = "lots"\n', "memory_mb"),
])
def test_an_invalid_decorator_policy_file_is_one_line_at_decoration_naming_file_and_field(tmp_path, python, text,
                                                                                            field):
    write_tree(tmp_path, {"app.py": POLICY_APP.format(policy="policies/broken.toml"), "policies/broken.toml": text})
    result = run(["app.py"], tmp_path, python=python, POET_ENABLED="1", POET_HOME=str(tmp_path / "home"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 2, 3, 4, 5] False True"
    line = _one_line_about(result.stderr, "@poet on __main__:add_one")
    assert "broken.toml" in line and field in line and "runs without POET" in line, line
    assert not (tmp_path / "home" / "events").exists()  # no fallback events: it never was enhanced


def test_the_cli_checks_the_learning_and_llm_settings_at_start_up(tmp_path, python):
    """A bad POET_EVENTS_* (or POET_LLM_*) value stops `python -m poet_runtime` with status 2 before anything
    runs (found at start-up with every other setting, not at the first @poet)."""
    write_tree(tmp_path, {"app.py": LEARNING_APP})
    for command in (["app.py"], ["status", "."]):
        result = run(["-m", "poet_runtime", *command], tmp_path, python=python, POET_EVENTS_RETENTION_DAYS="-1")
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "POET_EVENTS_RETENTION_DAYS: '-1' is not valid" in result.stderr and result.stdout == ""
    llm = run(["-m", "poet_runtime", "status", "."], tmp_path, python=python, POET_LLM_MAX_TOKENS="lots")
    assert llm.returncode == 2 and "POET_LLM_MAX_TOKENS" in llm.stderr, llm.stderr  # without a model set, too
