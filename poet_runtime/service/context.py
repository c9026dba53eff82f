"""What every router of the service shares: its folders and the scope check.

The application factory (``app.create_app``) builds one ``ServiceContext`` and hands it to each
router's ``build_router(context)``; routers never read settings or the environment themselves,
so a test can run two services side by side in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SCOPES = ("read", "write", "admin")  # each includes the ones before it


@dataclass
class ServiceContext:
    data_dir: Path  # --data DIR: templates/, keys, the shared answer cache
    store_root: Path  # the .poet store whose functions, versions and events are served
    # require(scope) -> a FastAPI dependency that refuses a request without a key of that scope
    # (401/403 problem documents) and returns the key's record; set by the factory.
    require: Callable[[str], Any] = field(default=None, repr=False)
    extras: dict = field(default_factory=dict)  # what a router publishes for the others (metrics, caches)
