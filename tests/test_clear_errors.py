"""Clear errors from the command line (issue 12, item 12), through real ``python -m poet_runtime`` processes.

An unknown ``events --type`` or a ``policy explain`` target that names no function is an
error (status 2) naming the value and the known ones, never a silent success.
"""

from __future__ import annotations

import pytest

from hook_helpers import poet, write_tree

pytestmark = pytest.mark.slow

APP = {
    "app.py": """
        from poet_runtime import poet

        @poet(domain="api_operations")
        def total(items):
            return sum(items)

        class Billing:
            @poet
            def charge(self, amount):
                return amount
    """,
}


def test_an_unknown_event_type_is_an_error_naming_the_known_ones(tmp_path):
    write_tree(tmp_path, APP)
    home = str(tmp_path / "home")
    result = poet(["events", "--type", "???"], tmp_path, POET_HOME=home)
    assert result.returncode == 2 and result.stdout == ""
    assert "'???'" in result.stderr and "function.execution" in result.stderr and "learning" in result.stderr
    result = poet(["events", "--type", "function.execution", "--type", "functon.feedback"], tmp_path, POET_HOME=home)
    assert result.returncode == 2 and "'functon.feedback'" in result.stderr
    assert "'function.execution'" not in result.stderr
    for good in ("function.execution", "learning", "learning.*", "version.promoted"):
        result = poet(["events", "--type", good], tmp_path, POET_HOME=home)
        assert result.returncode == 0, (good, result.stderr)


def test_policy_explain_of_a_function_that_does_not_exist_is_an_error(tmp_path):
    write_tree(tmp_path, APP)
    result = poet(["policy", "explain", "nosuch:fn"], tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "'nosuch:fn'" in result.stderr and "app:total" in result.stderr and "app:Billing.charge" in result.stderr
    result = poet(["policy", "explain", "app:totl"], tmp_path)
    assert result.returncode == 2 and "'totl'" in result.stderr and "Billing.charge, total" in result.stderr
    for good in ("app:total", "app:Billing.charge", "app.py:total"):
        result = poet(["policy", "explain", good], tmp_path)
        assert result.returncode == 0 and "backend" in result.stdout, (good, result.stderr)
