"""The dashboard in a real headless Chromium against a real service on a store real calls filled.

The store is made by running a ``@poet`` function with an objective in subprocesses: labelled
feedback (the learner moves ``threshold``, audited), results Enforce refuses (fallbacks), a
second function whose Perceive refuses (another reason), then a changed decorator argument
(a second version). ``python -m poet_runtime serve`` serves it (``service_helpers``); Chromium
signs in with a key, and every number the pages show is checked against the store's own files.
Screenshots of each page go to ``test-artifacts/`` (or ``$POET_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from browser_helpers import chromium, screenshot
from service_helpers import ServiceProcess

pytest.importorskip("selenium")

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FUNCTION = "dash_app:detect"
DRIFT = "dash_app:drift"
HOSTILE = '<img src=x id=pwned onerror="document.title=1"> \u202egnp.exe'
EVIL = "evil_mod:handmade"  # versions written by hand, not by the runtime: their code is hostile text
EVIL_CODE = ('FUNCTION = "evil_mod:handmade"\n# </td></tr></table><script>document.title="pwned"</script>\n'
             'x = "\u202e{n}"  # \u2028 is no line end to Python\n')

APP = '''\
import statistics

from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted"{extra})
def detect(score: float, threshold: float = 0.9) -> dict:
    return {{"drift_detected": score > threshold, "score": score}}


@poet(domain="ml_monitoring", policy="trusted", repair="coerce")
def drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {{"drift_detected": gap > threshold, "score": gap}}
'''

DRIVE = '''\
import random, sys
import poet_runtime
poet_runtime.enable(hook=False)
import dash_app

calls, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
for _ in range(calls):
    score = rng.random()
    dash_app.detect(score)
    dash_app.detect.feedback(label=score > 0.4)
for score in sys.argv[3].split(",") if sys.argv[3] else []:  # scores outside [0, 1]: Enforce refuses
    dash_app.detect(float(score))
for _ in range(int(sys.argv[4])):  # every value missing: Perceive refuses, the original raises
    try:
        dash_app.drift([None], [1.0])
    except TypeError:
        pass
dash_app.drift([0.2, 0.3], [0.25])
dash_app.drift(["0.2", "0.3"], [0.25])  # strings where floats belong: coerced, each one a reported repair
if len(sys.argv) > 5:
    dash_app.detect(0.7)
    dash_app.detect.feedback(label=True, comments=sys.argv[5])
'''


def _run(folder: Path, home: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(home), POET_CACHE_DIR=str(folder / "cache"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(folder / "mods"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", DRIVE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A store two real runs filled: v1 learned, v2 made by a changed decorator argument."""
    folder = tmp_path_factory.mktemp("dashboard")
    home = folder / "store"
    (folder / "mods").mkdir()
    app = folder / "mods" / "dash_app.py"
    app.write_text(APP.format(extra=""), encoding="utf-8")
    _run(folder, home, "120", "1", "1.5,2.0,-1.0", "2")
    app.write_text(APP.format(extra=", retries=1"), encoding="utf-8")
    _run(folder, home, "10", "2", "3.0", "1", HOSTILE)
    assert os.readlink(home / "dash_app.detect" / "current") == "v2"
    from poet_runtime.store import FunctionStore

    evil = FunctionStore(home / "evil_mod.handmade", EVIL)
    for n in (1, 2):
        evil.create(EVIL_CODE.format(n=n), {}, {}, {"generator": "by-hand", "config": {"policy": "default"}})
    (home / "evil_mod.handmade" / "v3").mkdir()  # a version whose metadata.json is not JSON: shown as damaged
    (home / "evil_mod.handmade" / "v3" / "metadata.json").write_text("{not json\u202e", encoding="utf-8")
    return folder, home


@pytest.fixture(scope="module")
def service(filled):
    folder, home = filled
    with ServiceProcess(folder / "data", home) as running:
        yield running


@pytest.fixture(scope="module")
def browser(service):
    with chromium() as driver:
        driver.get(service.url + "/")  # not signed in: the sign-in page
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "login")))
        screenshot(driver, "dashboard-login")
        driver.find_element(By.ID, "key").send_keys(service.keys["read"])
        driver.find_element(By.CSS_SELECTOR, "#login button").click()
        WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "functions")))
        yield driver


def _reports(home: Path, folder: str) -> dict:
    return json.loads((home / folder / "reports.json").read_text())


def _ints(counts) -> dict:
    return {k: v for k, v in (counts or {}).items() if isinstance(v, int) and v}


def _cell_counts(row, css: str) -> dict:
    return {item.find_element(By.CSS_SELECTOR, ".name").text: int(item.find_element(By.CSS_SELECTOR, ".n").text)
            for item in row.find_elements(By.CSS_SELECTOR, f"td.{css} li")}


def _wait(browser, condition, timeout: float = 10):
    """Until ``condition(driver)``; an element replaced by a reload meanwhile is looked up again."""
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _rows(browser, selector: str) -> list[dict]:
    """Each matching element's text and data-id, read in one script: a live update replacing the
    rows between a lookup and a read (StaleElementReferenceException) cannot split the answer."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => ({text: e.innerText, id: e.getAttribute('data-id')}))", selector)


def _open(browser, url: str, ready: str):
    browser.get(url)
    return WebDriverWait(browser, 10).until(EC.presence_of_element_located((By.CSS_SELECTOR, ready)))


def test_functions_page_shows_the_numbers_in_the_store(browser, service, filled):
    _, home = filled
    _open(browser, service.url + "/", "#functions")
    rows = {row.get_attribute("data-function"): row for row in browser.find_elements(By.CSS_SELECTOR, "#functions tbody tr")}
    assert set(rows) == {FUNCTION, DRIFT, EVIL}
    for function_id, folder in ((FUNCTION, "dash_app.detect"), (DRIFT, "dash_app.drift")):
        row, reports = rows[function_id], _reports(home, folder)
        calls, fallbacks = _ints(reports.get("calls")), _ints(reports.get("fallback"))
        assert row.find_element(By.CSS_SELECTOR, "td.current").text == os.readlink(home / folder / "current")
        assert int(row.find_element(By.CSS_SELECTOR, "td.enhanced").text) == calls.get("enhanced", 0)
        assert int(row.find_element(By.CSS_SELECTOR, "td.errors").text) == calls.get("errors", 0)
        assert _cell_counts(row, "fallbacks") == fallbacks
        assert _cell_counts(row, "reported") == {kind: sum(_ints(fields).values()) for kind, fields in reports.items()
                                                 if kind not in ("calls", "fallback", "repair") and _ints(fields)}
        assert _cell_counts(row, "repairs") == _ints(reports.get("repair"))
        assert int(row.find_element(By.CSS_SELECTOR, "td.calls").text) == sum(calls.values()) + sum(fallbacks.values())
        assert row.find_element(By.CSS_SELECTOR, "td.backend").text == "none"  # policy trusted: in-process
    # Not written by the built-in generator: it would run in the default policy's sandbox.
    assert rows[EVIL].find_element(By.CSS_SELECTOR, "td.backend").text == "restricted"
    assert rows[EVIL].find_element(By.CSS_SELECTOR, "td.calls").text == "0"
    # What the runs did, so the comparison above compared something.
    assert _cell_counts(rows[FUNCTION], "fallbacks") == {"enforce_rejected": 4}
    assert _cell_counts(rows[DRIFT], "fallbacks") == {"perceive_rejected": 3}
    assert sum(_cell_counts(rows[DRIFT], "repairs").values()) >= 2  # both strings were coerced
    assert _cell_counts(rows[DRIFT], "reported")  # ml_monitoring's own notes (data quality, evidence)
    assert int(rows[FUNCTION].find_element(By.CSS_SELECTOR, "td.enhanced").text) == 131  # 120 + 10 labelled, one commented
    screenshot(browser, "dashboard-functions")


def test_diff_between_two_chosen_versions_highlights_the_changed_lines(browser, service, filled):
    import difflib

    _, home = filled
    url = service.url + "/functions/" + FUNCTION
    _open(browser, url, "#diff-form")
    Select(browser.find_element(By.ID, "diff-a")).select_by_value("2")
    Select(browser.find_element(By.ID, "diff-b")).select_by_value("1")
    browser.find_element(By.ID, "diff-button").click()
    _wait(browser, lambda d: "a=2" in d.current_url and d.find_elements(By.CSS_SELECTOR, "table.diff"))
    old = (home / "dash_app.detect" / "v2" / "code.py").read_text().splitlines()
    new = (home / "dash_app.detect" / "v1" / "code.py").read_text().splitlines()
    expected = [line for line in difflib.ndiff(old, new) if line[:1] in "+-"]
    assert expected, "the two versions differ (retries=1)"

    def shown(kind: str) -> list[str]:
        return [cell.text[1:].strip() for cell in browser.find_elements(By.CSS_SELECTOR, f"table.diff tr.{kind} td.code")]

    assert shown("add") == [line[2:].strip() for line in expected if line[0] == "+"]
    assert shown("del") == [line[2:].strip() for line in expected if line[0] == "-"]
    # Highlighted: added and removed lines have their own colours, unchanged ones none.
    colour = lambda kind: browser.find_element(By.CSS_SELECTOR, f"table.diff tr.{kind}").value_of_css_property(  # noqa: E731
        "background-color")
    assert len({colour("add"), colour("del"), colour("same")}) == 3
    screenshot(browser, "dashboard-function-diff")


def test_learning_plot_shows_the_objective_and_the_audited_parameter(browser, service, filled):
    from poet_runtime import journal

    _, home = filled
    _open(browser, service.url + "/functions/" + FUNCTION, "#learning")
    objective = browser.find_element(By.CSS_SELECTOR, "figure.objective")
    # The objective now: accuracy of the last 20 labelled calls, computed here from the journal.
    events = sorted((e for e in journal.read(journal.events_root(home)) if e["payload"].get("function") == FUNCTION),
                    key=lambda e: e["timestamp"])
    outputs = {e["payload"]["execution_id"]: e["payload"].get("output") for e in events if e["type"] == "function.execution"}
    pairs = [(outputs[e["payload"]["execution_id"]]["drift_detected"], e["payload"]["label"])
             for e in events if e["type"] == "function.feedback"]
    last = pairs[-20:]
    assert float(objective.get_attribute("data-last")) == pytest.approx(sum(p == a for p, a in last) / len(last), abs=1e-5)
    assert int(objective.get_attribute("data-points")) == len(pairs) - 4  # one point per feedback from the fifth on
    threshold = browser.find_element(By.CSS_SELECTOR, 'figure.parameter[data-series="threshold"]')
    audit = json.loads((home / "dash_app.detect" / "v1" / "state.json").read_text())["audit"]
    assert len(audit) >= 2
    # Each audited change is a point, plus each version's starting value.
    assert int(threshold.get_attribute("data-points")) >= len(audit) + 1
    assert threshold.find_elements(By.CSS_SELECTOR, "svg path.line")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.objective svg line.mark")  # v1, v2 marked
    screenshot(browser, "dashboard-function-learning")


def test_rollback_button_needs_write_and_moves_current_on_disk(browser, service, filled):
    _, home = filled
    pointer = home / "dash_app.detect" / "current"
    before = os.readlink(pointer)
    target = "1" if before == "v2" else "2"
    _open(browser, service.url + "/functions/" + FUNCTION, "#rollback-box")
    field = browser.find_element(By.ID, "write-key")
    field.clear()
    field.send_keys(service.keys["read"])  # a read key: refused, nothing moves
    browser.find_element(By.CSS_SELECTOR, f'tr[data-version="{target}"] button.rollback').click()
    status = browser.find_element(By.ID, "rollback-status")
    _wait(browser, lambda d: "write" in status.text and "error" in status.get_attribute("class"))
    assert os.readlink(pointer) == before
    field.clear()
    field.send_keys(service.keys["write"])
    browser.find_element(By.CSS_SELECTOR, f'tr[data-version="{target}"] button.rollback').click()
    _wait(browser, lambda d: d.find_element(By.ID, "current-version").text == f"v{target}")
    assert os.readlink(pointer) == f"v{target}"
    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-version="{target}"]').get_attribute("class") == "version is-current"
    # The default diff now shows what the other version changes from the current one.
    shown = browser.find_element(By.CSS_SELECTOR, "table.diff")
    assert {shown.get_attribute("data-old"), shown.get_attribute("data-new")} == {"1", "2"}
    screenshot(browser, "dashboard-function-rollback")
    # And forward again with the key the tab kept (sessionStorage), so the store is as it was.
    browser.find_element(By.CSS_SELECTOR, f'tr[data-version="{before[1:]}"] button.rollback').click()
    _wait(browser, lambda d: d.find_element(By.ID, "current-version").text == before)
    assert os.readlink(pointer) == before


def test_live_view_shows_a_new_event_and_escapes_what_users_wrote(browser, service, filled):
    folder, home = filled
    _open(browser, service.url + "/events", "#events")
    _wait(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    # The feedback comment written by the second run is shown as text, not markup, and its bidi override is visible.
    details = [cell["text"] for cell in _rows(browser, "#events td.detail")]
    assert any("<img src=x id=pwned" in text for text in details)
    assert not any("\u202e" in text for text in details) and any("\\u{202e}gnp.exe" in text for text in details)
    assert not browser.find_elements(By.ID, "pwned") and browser.title == "Live events · POET"
    before = {row["id"] for row in _rows(browser, "#events tbody tr")}
    _run(folder, home, "1", "3", "", "0")  # one more labelled call: new execution and feedback events
    fresh = _wait(browser, lambda d: _rows(d, "#events tbody tr.fresh"), 20)
    assert {row["id"] for row in fresh}.isdisjoint(before)
    assert any(FUNCTION in row["text"] and "function.execution" in row["text"] for row in fresh)
    screenshot(browser, "dashboard-events")
    # A function's page follows its own events the same way.
    _open(browser, service.url + "/functions/" + FUNCTION, "#recent")
    _wait(browser, lambda d: d.find_element(By.ID, "live-status").text == "live")
    _run(folder, home, "1", "4", "", "0")
    _wait(browser, lambda d: _rows(d, "#recent tbody tr.fresh"), 20)
    assert all(FUNCTION in row["text"] for row in _rows(browser, "#recent tbody tr"))


def test_pages_need_a_session_and_forbid_inline_script(service):
    with httpx.Client(base_url=service.url, timeout=10) as client:
        answer = client.get("/functions/" + FUNCTION)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
        assert client.get("/dashboard/events/stream").status_code == 401
        assert client.post("/dashboard/session").status_code == 401
        assert client.post("/dashboard/session", headers={"Authorization": "Bearer poet_nope"}).status_code == 401
        opened = client.post("/dashboard/session", headers=service.headers("read"))
        assert opened.status_code == 200
        flags = opened.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=strict" in flags and service.keys["read"] not in opened.headers["set-cookie"]
        page = client.get("/")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        # Hand-written code in a diff is text: escaped, its bidi override shown, no script of its own.
        diff = client.get(f"/functions/{EVIL}", params={"a": "1", "b": "2"})
        assert diff.status_code == 200
        assert "<script>document" not in diff.text and "&lt;script&gt;document.title=" in diff.text
        assert "\u202e" not in diff.text and "\\u{202e}1" in diff.text and "\\u{202e}2" in diff.text
        # U+2028 is no line end to Python: the diff keeps it inside its line (splitlines() would break there)
        assert any("x = " in row and "is no line end" in row for row in diff.text.split("<tr")[1:])
        assert "<script" not in diff.text.replace('<script src="/static/dashboard.js" defer></script>', "")
        # Bad filters are refused naming what was wrong.
        bad_type = client.get("/events", params={"type": "nonsense"})
        assert bad_type.status_code == 422 and "unknown event type &#x27;nonsense&#x27;" in bad_type.text
        bad_since = client.get("/dashboard/events/stream", params={"since": "yesterday"})
        assert bad_since.status_code == 422 and "since" in bad_since.json()["detail"]
        # A damaged version is listed as damaged, with no button to make it current.
        rows = diff.text[diff.text.index('<section id="versions">'):diff.text.index("</tbody>")]
        damaged = rows[rows.index('data-version="3"'):]
        assert "damaged: metadata.json" in damaged and 'class="rollback"' not in damaged
        # Signing in sends the browser back only to a path on this server.
        for target, kept in (("/events?type=learning", "/events?type=learning"), ("//evil.example/", "/"),
                             ("/\\evil.example/", "/"), ("https://evil.example/", "/")):
            login = client.get("/login", params={"next": target})
            assert f'data-next="{kept.replace("&", "&amp;")}"' in login.text
        # The session dies with its key.
        from poet_runtime.service.auth import KeyStore

        extra = KeyStore(service.data_dir).add("short-lived", "read")
        with httpx.Client(base_url=service.url, timeout=10) as other:
            assert other.post("/dashboard/session", headers={"Authorization": f"Bearer {extra}"}).status_code == 200
            assert other.get("/").status_code == 200
            KeyStore(service.data_dir).revoke("short-lived")
            assert other.get("/").status_code == 303
        # Signing out ends the session.
        assert client.post("/dashboard/logout").status_code == 200
        assert client.get("/").status_code == 303


def test_pages_count_against_the_keys_rate_limit(tmp_path):
    with ServiceProcess(tmp_path / "data", tmp_path / "store", args=["--rate-limit", "3"]) as limited:
        with httpx.Client(base_url=limited.url, timeout=10) as client:
            assert client.post("/dashboard/session", headers=limited.headers("read")).status_code == 200
            answers = [client.get("/") for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [200, 200]  # the sign-in was the first of three
        assert "No functions in the store" in answers[0].text
        refused = answers[2]
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "test-read" in refused.json()["detail"]
