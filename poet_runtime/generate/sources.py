"""The text each module was compiled from, captured at import (or decoration), never re-read at a first call.

A function's spec, and so its version key, must come from the text Python compiled
into the function object that runs, not from the file as it is when the function is
first called (an editor may have saved it in between). Two moments capture it:

- the import hook's loader (and the runner, for the ``__main__`` script) hands over
  each rewritten module's source bytes as it loads them: ``remember_module_source``.
  The bytes are decoded only when a spec needs them;
- a function decorated without the hook (the runtime turned on in code) is captured
  at decoration: ``snapshot_source`` reads its file once through ``linecache``.

One text per file: a later load of the same file (a reload, a second import under
another name) replaces it; functions of the older load then read the newer text.

Import-free on purpose: the loader calls into this module for every module it loads.
``generate.spec`` re-exports the public names and keeps its prepared index of each
text (a line table and the module's top level) in the entry.
"""

from __future__ import annotations

import sys

_MAX_FRAMES = 64  # how far up snapshot_source looks for the module body being executed


class Entry:
    """One file's text (bytes until first needed) and what ``spec`` prepared from it."""

    __slots__ = ("data", "prepared", "module_code", "stored", "unsaved")

    def __init__(self, data, module_code=None, stored=None):
        self.data = data  # bytes from the loader, or the decoded text
        self.prepared = None  # generate.spec's index of the text, built at the first spec
        self.module_code = module_code  # weakref to the module body's code object that used it, once known
        self.stored = stored  # (path, key): where spec may keep its index of this text (beside the hook's pyc)
        self.unsaved = False  # the index was built here and is not at ``stored`` yet

    def text(self) -> str:
        data = self.data
        if not isinstance(data, str):
            data = self.data = decode(data)
        return data

    def adopt(self, module_code) -> bool:
        """True when ``module_code`` (the module body now running) is the execution this text belongs to."""
        known = self.module_code
        if known is None:
            import weakref

            try:
                self.module_code = weakref.ref(module_code)
            except TypeError:
                return True
            return True
        return known() is module_code


_texts: dict[str, Entry] = {}


def decode(data: bytes) -> str:
    """Source bytes -> the text ``linecache`` would give for the same file.

    As importlib decodes (coding cookie or BOM, universal newlines), then as linecache
    ends it: a final line always ends with a newline. Specs read from this text are
    byte-for-byte those read through linecache.
    """
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = io.IncrementalNewlineDecoder(None, True).decode(data.decode(encoding), final=True)
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def remember_module_source(filename: str, source, *, stored=None) -> None:
    """Remember the text module ``filename`` is being compiled from (``bytes`` as read from disk, or ``str``).

    Replaces whatever was remembered for that file. Called by the import hook's loader
    and the runner as they load a module, before its body runs. ``stored``: ``(path,
    key)`` where ``spec`` may keep what it reads from the module's AST (the loader puts
    it beside its pyc, under the pyc's key), so a later process does not parse it again.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
    elif not isinstance(source, str):
        raise TypeError(f"source must be str or bytes, not {type(source).__name__}")
    _texts[filename] = Entry(source, stored=stored)


def remember_entry(filename: str, entry: Entry) -> None:
    """Like ``remember_module_source`` with an entry already made (``spec.remember_parsed``)."""
    _texts[filename] = entry


def remembered_source(filename: str) -> str | None:
    """The text remembered for ``filename``, or None."""
    entry = _texts.get(filename)
    return entry.text() if entry is not None else None


def entry_for(function, filename: str | None = None) -> Entry | None:
    """The remembered entry for the file ``function`` was compiled from (by ``co_filename``, else ``filename``)."""
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    entry = _texts.get(code.co_filename) if code is not None else None
    if entry is None and filename:
        entry = _texts.get(filename)
    return entry


def forget(filename: str | None = None) -> None:
    """Drop the remembered text of ``filename`` (all of them with None); for tests and tools."""
    if filename is None:
        _texts.clear()
    else:
        _texts.pop(filename, None)


def _running_module_code(filename: str, frame):
    """The code object of ``filename``'s module body if it is executing in this thread (a frame up the stack)."""
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name == "<module>" and code.co_filename == filename:
            return code
        frame = frame.f_back
    return None


def snapshot_source(function) -> None:
    """Capture now, at decoration time, the text of the file ``function`` was compiled from.

    Once per file: when a text is already remembered (the import hook gave it, or an
    earlier function of the same module was snapshotted), nothing is read. The file is
    read through ``linecache`` without ``checkcache``, so a text linecache already holds
    is kept. The one exception is the module's body being executed again (a reload, or
    the same file imported under a second name): then the file is read as it is now,
    since that is the text the new functions were compiled from. Never raises.
    """
    try:
        target = getattr(function, "__func__", function)
        code = getattr(target, "__code__", None)
        if code is None:
            return
        filename = code.co_filename
        if not filename or filename.startswith("<"):
            return
        running = _running_module_code(filename, sys._getframe(1))
        entry = _texts.get(filename)
        if entry is not None and (running is None or entry.adopt(running)):
            return
        import linecache

        if entry is not None:  # the module body runs again: its functions come from the file as it is now
            linecache.checkcache(filename)
        module = sys.modules.get(getattr(target, "__module__", None) or "")
        lines = linecache.getlines(filename, getattr(module, "__dict__", None))
        if not lines:
            return
        fresh = Entry("".join(lines))
        if running is not None:
            fresh.adopt(running)
        _texts[filename] = fresh
    except Exception:  # a decoration must never fail because of this
        return
