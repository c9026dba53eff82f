"""The store and its neighbours are untrusted input (issue 13, item 3; size caps from item 4).

Each attack is made the way an attacker would make it: a tampered ``.poet/`` folder, a
version signed with another key, a planted compiled-code cache entry, a repository's
``[tool.poet]``, a symbolic link, a huge ``code.py``; each is run through real
subprocesses (``python -m poet_runtime app.py``). Every payload writes a marker file; the
tests show it never runs unreviewed, that each tampering is reported by file, version and
function, and that the payload is real (it does run once the user signs it). The honest
flow still works: enhance, show, edit by hand, accept, run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

APP = textwrap.dedent('''
    import json
    import poet_runtime
    from poet_runtime import poet


    @poet(domain="ml_monitoring", retries=2)
    def score(values: list[float], threshold: float = 0.5) -> dict:
        mean = sum(values) / len(values)
        return {"high": mean > threshold, "mean": round(mean, 4)}


    if __name__ == "__main__":
        out = [score([0.1, 0.2]), score([0.9, 1.0])]
        rec = poet_runtime.last_execution()
        print(json.dumps({"results": out, "version": rec.version, "backend": rec.backend,
                          "fell_back": rec.fell_back, "reason": rec.reason}))
''')
EXPECTED = [{"high": False, "mean": 0.15}, {"high": True, "mean": 0.95}]


class Project:
    """A folder with app.py, its own store, cache and signing key, and a way to run it."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.cache = root / "cache"
        self.config = root / "config"  # XDG_CONFIG_HOME: the user's key lives here, outside the store
        self.marker = root / "PWNED"
        (root / "app.py").write_text(APP)

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
        env.update(POET_HOME=str(self.home), POET_CACHE_DIR=str(self.cache), XDG_CONFIG_HOME=str(self.config),
                   POET_POLICY="trusted", PYTHONDONTWRITEBYTECODE="1")
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, *args, cwd=None, **extra) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "poet_runtime", *args], capture_output=True, text=True,
                              env=self.env(**extra), cwd=cwd or self.root, timeout=120)

    def app(self, **extra) -> tuple[dict, str]:
        result = self.run("app.py", **extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr

    def version(self, number: int) -> Path:
        return self.home / "app.score" / f"v{number}"

    def payload(self) -> str:
        return f"open({str(self.marker)!r}, 'w').write('ran')\n"


@pytest.fixture
def project(tmp_path):
    project = Project(tmp_path)
    output, _ = project.app()
    assert output["results"] == EXPECTED and output["version"] == 1 and output["backend"] == "none"
    return project


def test_a_tampered_builtin_version_never_runs_in_process_is_reported_by_name_and_is_remade(project):
    code = project.version(1) / "code.py"
    code.write_text(project.payload() + code.read_text())  # before: it ran in-process, `status` said up to date
    output, stderr = project.app()
    assert not project.marker.exists()
    assert output["results"] == EXPECTED and not output["fell_back"]
    assert output["version"] == 2 and output["backend"] == "none"  # ours, remade byte for byte as the next version
    assert f"{code}: code.py is not what was stored at creation" in stderr and "(app:score v1)" in stderr
    assert "v1 repaired as v2" in stderr
    listing = project.run("versions", "app:score", COLUMNS="200")
    assert "tampered" in listing.stdout and listing.returncode == 0
    # The payload is real: once the user signs v1 and makes it current, it runs (trusted: in-process).
    accepted = project.run("versions", "--accept", "app:score", "1")
    assert accepted.returncode == 0 and "v1 accepted" in accepted.stdout, accepted.stderr
    assert project.run("rollback", "app:score", "1").returncode == 0
    output, stderr = project.app()
    assert output["version"] == 1 and output["results"] == EXPECTED
    assert project.marker.exists() and "untrusted" not in stderr


def test_a_version_signed_with_another_key_is_refused_in_process_and_status_says_why(project, monkeypatch):
    from poet_runtime.store import FunctionStore

    store = FunctionStore(project.home / "app.score", "app:score")
    v1 = store.get(1)
    metadata = {k: v for k, v in v1.metadata.items() if k not in ("integrity", "version", "parent", "created_at")}
    metadata["generator"] = "llm-2"  # an "LLM answer" planted by someone with their own key
    monkeypatch.setenv("POET_STORE_KEY", "the attacker's key")
    forged = store.create(project.payload() + v1.code(), v1.params(), v1.state(), metadata)
    monkeypatch.delenv("POET_STORE_KEY")
    assert forged.metadata["integrity"]["hmac"]
    output, stderr = project.app()
    assert not project.marker.exists()
    assert output["results"] == EXPECTED and output["fell_back"] and output["reason"] == "untrusted_version"
    assert f"{forged.path / 'code.py'}: code.py's signature does not match" in stderr and "(app:score v2)" in stderr
    status = project.run("status", ".", COLUMNS="250")
    assert "up to date" not in status.stdout and "refused in-process under its policy" in status.stdout
    assert "2 of 4 enhanced; fell back: untrusted_version 2" in status.stdout  # the first run: 2 enhanced
    # Signed by this user, the same code runs: the payload is real.
    assert project.run("versions", "--accept", "app:score", "2").returncode == 0
    output, _ = project.app()
    assert project.marker.exists() and output["version"] == 2 and not output["fell_back"]


def test_a_planted_compiled_code_entry_is_ignored(project):
    import diskcache
    import marshal

    from poet_runtime.cache import _TAG
    import hashlib

    code_path = project.version(1) / "code.py"
    source = code_path.read_text()
    key = hashlib.sha256(f"{_TAG}\0{code_path}\0{source}".encode("utf-8")).hexdigest()
    evil = marshal.dumps(compile(project.payload() + source, str(code_path), "exec"))
    cache = diskcache.Cache(str(project.cache / "code"))
    assert key in cache  # the first run cached the reviewed code.py under this key
    for planted in (evil, b"PC1" + b"\0" * 32 + evil):  # raw marshal (before: it ran), then a forged HMAC
        cache.set(key, planted)
        output, stderr = project.app()
        assert not project.marker.exists()
        assert output["results"] == EXPECTED and output["version"] == 1 and output["backend"] == "none"
        assert "compiled-code cache: an entry that this user's key did not sign was ignored" in stderr
    cache.close()


REPO_PROBE = ("from poet_runtime.decorator import PoetConfig; from poet_runtime.resolve import effective_policy; "
              "print(effective_policy(PoetConfig.from_kwargs('m:f'), 'm:f').backend)")


def test_a_repository_may_tighten_the_policy_but_not_weaken_it(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)

    def backend(policy: str, **extra) -> subprocess.CompletedProcess:
        (repo / "pyproject.toml").write_text(f'[tool.poet]\npolicy = "{policy}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
        env.update(extra)
        return subprocess.run([sys.executable, "-c", REPO_PROBE], capture_output=True, text=True, env=env,
                              cwd=repo / "src", timeout=60)

    weakened = backend("trusted")  # before: "none", from any parent folder's pyproject.toml
    assert weakened.stdout.strip() == "restricted"
    assert "[tool.poet] policy: weakens the default policy (backend none" in weakened.stderr
    tightened = backend("strict")
    assert tightened.stdout.strip() == "wasm" and "weakens" not in tightened.stderr  # tightening: honoured
    assert backend("trusted", POET_ALLOW_REPO_POLICY="1").stdout.strip() == "none"  # the user opted in
    assert backend("default", POET_POLICY="trusted").stdout.strip() == "none"  # the user's environment decides
    # `policy explain` tells what the runtime applies, not what the repository asked for.
    (repo / "pyproject.toml").write_text('[tool.poet]\npolicy = "trusted"\n')
    (repo / "src" / "app.py").write_text("from poet_runtime import poet\n\n@poet()\ndef f(x: int) -> int:\n    return x\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    explained = subprocess.run([sys.executable, "-m", "poet_runtime", "policy", "explain", "app:f"],
                               capture_output=True, text=True, env=env, cwd=repo / "src", timeout=60)
    assert "app:f under default:" in explained.stdout and "weakens the default policy" in explained.stdout
    assert "backend        restricted" in explained.stdout, explained.stdout


def test_a_repository_may_not_point_the_store_or_cache_outside_itself(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    outside = tmp_path / "elsewhere"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    for key in ("cache_dir", "home"):
        (repo / "pyproject.toml").write_text(f'[tool.poet]\n{key} = "{outside}"\n')
        cli = subprocess.run([sys.executable, "-m", "poet_runtime", "status", "."], capture_output=True, text=True,
                             env=env, cwd=repo, timeout=60)
        assert cli.returncode == 2 and f"[tool.poet] {key}: '{outside}' is outside the project folder" in cli.stderr
    # In an activated process: one line, and the program runs without POET; the user may allow it.
    activated = subprocess.run([sys.executable, "-c", "import poet_runtime; print('ran')"], capture_output=True,
                               text=True, env={**env, "POET_ENABLED": "1"}, cwd=repo, timeout=60)
    assert activated.stdout.strip() == "ran" and "continuing without POET" in activated.stderr
    allowed = subprocess.run([sys.executable, "-m", "poet_runtime", "status", "."], capture_output=True,
                             text=True, env={**env, "POET_ALLOW_REPO_POLICY": "1"}, cwd=repo, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    (repo / "pyproject.toml").write_text('[tool.poet]\ncache_dir = ".cache/poet"\n')  # inside: fine
    from poet_runtime.settings import load_settings

    assert load_settings(environ={}, cwd=repo).cache_dir == (repo / ".cache" / "poet").resolve()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_symbolic_link_in_the_store_is_refused_and_never_read(project, kind):
    secret = project.root / "secret.txt"
    secret.write_text("TOPSECRET = 1\n")
    v1 = project.version(1)
    if kind == "file":
        (v1 / "code.py").unlink()
        (v1 / "code.py").symlink_to(secret)
    else:  # the whole version folder points elsewhere
        elsewhere = project.root / "planted"
        os.rename(v1, elsewhere)
        (elsewhere / "code.py").write_text("TOPSECRET = 1\n")
        v1.symlink_to(elsewhere)
    output, stderr = project.app()
    assert output["results"] == EXPECTED and output["version"] == 2 and output["backend"] == "none"
    assert "is a symbolic link" in stderr and "TOPSECRET" not in stderr
    listed = project.run("versions", "app:score", COLUMNS="250")
    assert "TOPSECRET" not in listed.stdout + listed.stderr and "is a symbolic link" in listed.stdout
    shown = project.run("show", "app:score", "--version", "1")  # a reviewer's command never reads through the link either
    assert shown.returncode == 1 and "TOPSECRET" not in shown.stdout + shown.stderr
    assert "is a symbolic link" in shown.stderr


def test_a_huge_code_py_is_refused_before_it_is_read(project):
    code = project.version(1) / "code.py"
    line = "x = [" + "1, " * 30 + "]\n"
    with open(code, "a") as handle:
        handle.write(line * (5 * 2**20 // len(line)))  # 5 MB: before, 35-48 s and ~1 GB in the host
    started = time.monotonic()
    output, stderr = project.app()
    assert time.monotonic() - started < 20
    assert output["results"] == EXPECTED and output["version"] == 2
    assert f"{code}: is {code.stat().st_size} bytes; the cap is 262144" in stderr


def test_the_honest_flow_enhance_show_edit_accept_run(tmp_path):
    project = Project(tmp_path)
    enhanced = project.run("enhance", "app.py")
    assert enhanced.returncode == 0, enhanced.stderr
    shown = project.run("show", "app:score")
    assert shown.returncode == 0 and "def operate_prime" in shown.stdout
    code = project.version(1) / "code.py"
    signature = "def operate_prime(logic, args, kwargs):\n"
    assert signature in code.read_text()
    code.write_text(code.read_text().replace(signature, signature + "    print('reviewed edit ran')\n", 1))
    accepted = project.run("versions", "--accept", "app:score", "1")
    assert accepted.returncode == 0 and "v1 accepted" in accepted.stdout, accepted.stderr
    result = project.run("app.py")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.stdout.count("reviewed edit ran") == 2 and output["version"] == 1 and output["backend"] == "none"
    assert output["results"] == EXPECTED and "untrusted" not in result.stderr and "damaged" not in result.stderr
    listing = project.run("versions", "app:score", COLUMNS="250")
    assert "signed (accepted by hand)" in listing.stdout
    status = project.run("status", ".", COLUMNS="250")
    assert "up to date" in status.stdout and "2 of 2 enhanced" in status.stdout
    # An edit with a character a reviewer cannot see is not accepted.
    code.write_text(code.read_text().replace("reviewed edit ran", "reviewed\u202e edit ran"))
    refused = project.run("versions", "--accept", "app:score", "1")
    assert refused.returncode == 1 and "U+202E" in refused.stderr


def test_the_signing_key_is_private_and_outside_the_store(project):
    key = project.config / "poet_runtime" / "key"  # made by the first run (it signs compiled-code entries)
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600 and (key.parent.stat().st_mode & 0o077) == 0
    assert project.run("versions", "--accept", "app:score", "1").returncode == 0
    key.chmod(0o644)  # readable by others: not used, said so, and the version counts as unsigned
    listing = project.run("versions", "app:score", COLUMNS="250")
    assert "signing key not used" in listing.stderr


def test_a_planted_rewritten_module_pyc_is_ignored(tmp_path):
    import glob
    import marshal

    project = Project(tmp_path)
    (tmp_path / "lib.py").write_text(APP.split('if __name__ == "__main__":')[0])
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import json
        from lib import score
        print(json.dumps({"results": [score([0.1, 0.2]), score([0.9, 1.0])]}))
    '''))
    first = project.run("app.py", PYTHONDONTWRITEBYTECODE=None)
    assert first.returncode == 0, first.stderr
    (pyc,) = glob.glob(str(tmp_path / "__pycache__" / "lib.*poet*.pyc"))
    header = Path(pyc).read_bytes()[:16]  # magic, flags, and the source hash anyone can compute
    evil = marshal.dumps(compile(project.payload() + (tmp_path / "lib.py").read_text(), str(tmp_path / "lib.py"), "exec"))
    for planted in (header + evil, header + b"\0" * 32 + evil):  # the old layout (before: it ran), a forged HMAC
        Path(pyc).write_bytes(planted)
        result = project.run("app.py", PYTHONDONTWRITEBYTECODE=None)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1])["results"] == EXPECTED
        assert not project.marker.exists()
    assert Path(pyc).read_bytes() != planted  # compiled again and signed


def test_status_does_not_call_a_version_that_never_ran_enhanced_up_to_date(project):
    reports = project.home / "app.score" / "reports.json"
    assert json.loads(reports.read_text())["calls"] == {"enhanced": 2}  # the runner counted the fixture's run
    # A program activated by POET_ENABLED=1 (no runner) counts its calls as well.
    activated = subprocess.run([sys.executable, "-c", "from app import score; score([0.1, 0.2]); score([0.9, 1.0])"],
                               capture_output=True, text=True, timeout=120, env=project.env(POET_ENABLED="1"),
                               cwd=project.root)
    assert activated.returncode == 0, activated.stderr
    assert json.loads(reports.read_text())["calls"] == {"enhanced": 4}
    # What another machine's runs left: every call fell back (a version its policy can never load).
    reports.write_text(json.dumps({"fallback": {"violation:memory_mb": 5}}))
    status = project.run("status", ".", COLUMNS="250")
    assert "up to date" not in status.stdout
    assert "no recorded call ran enhanced" in status.stdout and "0 of 5 enhanced; fell back: violation:memory_mb 5" in status.stdout


def test_a_linked_function_folder_is_neither_read_nor_written(project):
    folder = project.home / "app.score"
    target = project.root / "somewhere_else"
    os.rename(folder, target)
    folder.symlink_to(target)
    before = sorted(p.name for p in target.iterdir())
    output, stderr = project.app()
    assert output["results"] == EXPECTED and output["fell_back"] and output["reason"] == "damaged_version"
    assert f"{folder}: is a symbolic link" in stderr
    assert sorted(p.name for p in target.iterdir()) == before  # nothing written through the link
