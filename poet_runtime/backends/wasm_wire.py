"""The host's side of the WASM boundary's data: JSON with tagged types.

The encoding itself (JSON with tagged tuples, bytes, sets and non-string keys;
``decode`` refusing any shape ``encode`` would not produce) is
``poet_sandbox.wire``, shared with the guest. No user global crosses any more: the
generated module never contains the user's logic (contract 2), so the only values
that cross are a call's arguments, the logic's results and what generated code
hands back, each under a token (``backends/crossing.py``). This module adds the
one check the JSON text needs that ``wire.encode`` does not make.
"""

from __future__ import annotations

import json

from poet_runtime.resources import load_facility

load_facility()  # makes poet_sandbox importable in the host
from poet_sandbox.wire import MAX_DEPTH, NotData, decode, encode, is_data  # noqa: E402,F401

__all__ = ["MAX_DEPTH", "NotData", "decode", "encode", "is_data", "fits_json"]


def fits_json(data) -> bool:
    """True when encoded ``data`` also turns into JSON text (an int of more than
    ``sys.get_int_max_str_digits()`` digits does not). Only asked on the slow path,
    after a whole frame failed."""
    try:
        json.dumps(data, allow_nan=True)
    except (ValueError, TypeError, RecursionError):
        return False
    return True
