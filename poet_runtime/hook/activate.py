"""``POET_ENABLED=1 python app.py``: turn POET on at interpreter start-up, from a ``.pth`` file.

The installed ``poet_runtime_hook.pth`` holds ``PTH_LINE`` (the build backend in
``_pth_build/`` copies it from here into every wheel, regular or editable). The line
checks ``os.environ`` itself before importing anything, so a process without
``POET_ENABLED`` pays one dictionary lookup. When it is set:

- a bad setting (any ``POET_*`` variable or ``[tool.poet]`` key) is printed once to stderr,
  naming the variable, and the program continues WITHOUT POET: an environment variable
  meant for one tool must not kill every Python process that inherits it (the runner,
  ``python -m poet_runtime``, is strict instead and exits with 2);
- a missing or broken installation (the ``.pth`` left behind, an import error) is
  reported the same way and the program continues;
- otherwise ``poet_runtime.enable()`` runs, which installs the import hook. Modules are
  selected lazily (``sys.path[0]`` is not set yet while ``.pth`` files run). The
  ``__main__`` script itself is not rewritten on this path (a meta-path hook never sees
  it); its ``@poet`` functions are still enhanced by the decorator, without static identity.
"""

from __future__ import annotations


PTH_NAME = "poet_runtime_hook.pth"
PTH_LINE = (
    "import os; exec(\"try:\\n import poet_runtime.hook.activate as _poet_activate\\n _poet_activate.from_pth()\\n"
    "except Exception as _poet_error:\\n import sys\\n if not getattr(sys, '_poet_pth_reported', False):\\n"
    "  sys._poet_pth_reported = True\\n  print('poet_runtime: POET_ENABLED is set but POET could not start (%s: %s);"
    " continuing without it' % (type(_poet_error).__name__, _poet_error), file=sys.stderr)\")"
    " if os.environ.get('POET_ENABLED', '').strip().lower() not in ('', '0', 'false', 'no', 'off') else None\n"
)
_activated = False  # site runs a venv's .pth files twice on 3.11 (venv() and main() both add the folder)


def from_pth() -> None:
    global _activated
    if _activated:
        return
    _activated = True
    import poet_runtime

    activate = getattr(poet_runtime, "_activate_from_environment", None)
    if activate is not None:
        activate()  # importing the package has normally done it already; a second call is harmless
        return
    from poet_runtime import hook  # an older core without it: the hook alone

    hook.install()
