"""Output helpers shared by the store commands: a rich table when rich is installed, plain text otherwise.

Private (leading underscore) so the CLI's command discovery skips it; rich is imported
only when something is printed.
"""

from __future__ import annotations

import sys


def console(stderr: bool = False):
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(stderr=stderr, highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    out = console()
    if out is None:
        if title:
            print(title)
        print("\t".join(columns))
        for row in rows:
            print("\t".join(str(cell) for cell in row))
        return
    from rich.table import Table

    grid = Table(title=title, show_lines=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    out.print(grid)


def code(text: str, lexer: str = "python") -> None:
    out = console()
    if out is None or not sys.stdout.isatty():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    from rich.syntax import Syntax

    out.print(Syntax(text, lexer, line_numbers=lexer == "python", word_wrap=False))


def error(message: str) -> None:
    print(f"poet: error: {message}", file=sys.stderr)
