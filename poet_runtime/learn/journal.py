"""Moved to ``poet_runtime.journal``: the event journal is storage, below ``resolve``
in the call path, not part of learning. This name stays for older imports."""

import sys

from poet_runtime import journal as _journal

sys.modules[__name__] = _journal
