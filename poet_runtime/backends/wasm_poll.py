"""WASI ``poll_oneoff``, read and answered by the host: the part that needs no guest.

The wasm backend replaces WASI's own ``poll_oneoff`` (the call behind every
``time.sleep`` and ``select`` in the guest) because wasmtime's blocks the guest's
thread for the whole requested time, past any deadline: an epoch deadline cannot
interrupt a host call. ``plan`` decodes the guest's subscriptions into "wait this
long, then report these events"; ``wasm_instance.Guest.poll_oneoff`` does the
memory I/O and waits in slices that end at the request's deadline.
"""

from __future__ import annotations

import struct
import time

EINVAL, ENOMEM = 28, 48  # WASI errno values
MAX_SUBSCRIPTIONS = 4096  # one call's host work is bounded
SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id / fd, timeout, precision, flags
EVENT = struct.Struct("<QHB5xQH6x")  # userdata, errno, type, nbytes, flags
CLOCK, FD_READ, FD_WRITE = 0, 1, 2
REALTIME = 0
ABSTIME = 1


def plan(raw: bytes, origin_ns: int) -> tuple[int | None, float, list[tuple]]:
    """(errno or None, seconds to wait, events to report after the wait).

    Files and stdio are always ready (nothing in the guest can block on them), so
    any descriptor subscription answers at once; otherwise the earliest clock
    decides the wait and every clock due by then is reported. Absolute monotonic
    times count from ``origin_ns`` (``time.perf_counter_ns()`` when the guest's
    WASI context was made: wasmtime's monotonic clock starts there).
    """
    count = len(raw) // SUBSCRIPTION.size
    if count == 0:
        return EINVAL, 0.0, []
    if count > MAX_SUBSCRIPTIONS:
        return ENOMEM, 0.0, []
    ready, clocks = [], []
    for userdata, tag, which, timeout, _precision, flags in SUBSCRIPTION.iter_unpack(raw):
        if tag == CLOCK:
            if flags & ABSTIME:
                timeout -= time.time_ns() if which == REALTIME else time.perf_counter_ns() - origin_ns
            clocks.append((max(0, timeout), userdata))
        elif tag in (FD_READ, FD_WRITE):
            ready.append((userdata, 0, tag, 1, 0))
        else:
            return EINVAL, 0.0, []
    if ready:
        return None, 0.0, ready
    wait_ns = min(timeout for timeout, _ in clocks)
    return None, wait_ns / 1e9, [(u, 0, CLOCK, 0, 0) for t, u in clocks if t <= wait_ns]


def encode_events(events: list[tuple]) -> bytes:
    return b"".join(EVENT.pack(*event) for event in events)
