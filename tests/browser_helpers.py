"""A real headless Chromium for the dashboard tests: Debian's chromium and chromedriver, driven by Selenium.

The README's test line stays the only set-up step: when the browser is missing and we are root,
``ensure_browser`` installs Debian's ``chromium`` and ``chromium-driver`` with apt (under a lock
file, so parallel sessions do not run apt at once); when we are not root the tests are skipped
with that reason, except under ``CI``, where a missing browser is a failure. Selenium Manager
never runs (``SE_OFFLINE``, and the driver and browser paths are given): nothing is downloaded
behind the test's back.

Chromium is started with the flags this closed network needs (no background networking,
component updates, sync or QUIC: without them it stalls on connections that never answer) and
a new empty profile. One browser per test module: it takes seconds to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver")
LOCK = Path(tempfile.gettempdir()) / "poet-browser-install.lock"
ROOT = Path(__file__).resolve().parent.parent
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")


class BrowserMissing(RuntimeError):
    """Chromium or ChromeDriver is not installed and could not be installed here."""


def _present() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def _apt(*args: str, timeout: float) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none"}
    command = ["apt-get", *args]
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BrowserMissing(f"`{' '.join(command)}` could not run: {error}") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise BrowserMissing(f"`{' '.join(command)}` exited with {done.returncode}:\n{tail}")


def install() -> None:
    """``apt-get update`` then install the packages, once at a time across processes."""
    if shutil.which("apt-get") is None:
        raise BrowserMissing(f"{CHROMIUM} or {CHROMEDRIVER} is missing and there is no apt-get to install "
                             f"{' '.join(PACKAGES)} with")
    with open(LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing right now: wait for it
        try:
            if _present():
                return
            _apt("update", timeout=600)
            _apt("install", "-y", "--no-install-recommends", *PACKAGES, timeout=1800)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if not _present():
        raise BrowserMissing(f"apt-get installed {' '.join(PACKAGES)} but {CHROMIUM} or {CHROMEDRIVER} is still missing")


def ensure_browser() -> None:
    """Chromium and ChromeDriver are there after this, or the test is skipped (failed under CI)."""
    if _present():
        return
    if os.geteuid() == 0:
        try:
            install()
        except BrowserMissing as error:
            pytest.fail(f"could not install the browser the dashboard tests need: {error}", pytrace=False)
        return
    reason = (f"{CHROMIUM} / {CHROMEDRIVER} are not installed and installing them needs root: "
              f"apt-get install {' '.join(PACKAGES)}")
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: a missing browser fails the run)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium under ChromeDriver with a fresh profile; quit and removed afterwards."""
    ensure_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look anything up
    profile = tempfile.mkdtemp(prefix="poet-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    log = Path(profile + ".chromedriver.log")
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(log)), options=options)
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
        shutil.rmtree(profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            log.unlink()


def artifacts_dir() -> Path:
    """``$POET_TEST_ARTIFACTS`` or ``test-artifacts/`` at the repository root (git-ignored)."""
    folder = Path(os.environ.get("POET_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, name: str) -> Path:
    """The whole page as ``<artifacts>/<name>.png`` (the window grown to the page's height first)."""
    size = driver.get_window_size()
    height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    driver.set_window_size(size["width"], min(max(int(height) + 40, 600), 6000))
    path = artifacts_dir() / f"{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path
