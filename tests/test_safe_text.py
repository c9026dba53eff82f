"""What ``safe_text`` shows a person: every character that acts or hides is written out."""

from __future__ import annotations

import pytest

from poet_runtime.safe_text import hidden_characters, visible


@pytest.mark.parametrize("char, shown", [
    ("\u202e", "\\u{202e}"),  # right-to-left override (Trojan Source)
    ("\u2066", "\\u{2066}"),  # left-to-right isolate
    ("\u200b", "\\u{200b}"),  # zero-width space
    ("\x1b", "\\x1b"),  # ESC: terminal escapes
    ("\r", "\\r"),
    ("\x85", "\\x85"),  # NEL
    ("\u2028", "\\u{2028}"),  # line separator: a line break to editors and browsers
    ("\u2029", "\\u{2029}"),  # paragraph separator
])
def test_a_hidden_character_is_written_out(char, shown):
    assert visible(f"a{char}b") == f"a{shown}b"
    assert [found[:2] for found in hidden_characters(f"x = 1\ny = 'a{char}b'")] == [(2, 7)]


def test_plain_text_newlines_and_tabs_stay_unless_one_line_is_asked_for():
    text = "déjà vu\tok\nnext line ✓"
    assert visible(text) == text
    assert visible(text, allow_newlines=False) == "déjà vu\\tok\\nnext line ✓"
    assert hidden_characters(text) == []
