"""PEP 517 build backend: setuptools, plus the ``POET_ENABLED`` activation ``.pth`` in every wheel.

Why a wrapper: setuptools has no declarative way to put a file at the root of
site-packages, and its editable wheels skip custom build commands. So the wheel
setuptools builds (regular or editable) is re-zipped with ``poet_runtime_hook.pth``
added at its root and listed in its RECORD (hash and size), which makes
``pip install .`` and ``pip install -e .`` install it and ``pip uninstall`` remove it.
The line itself is ``PTH_LINE`` in ``poet_runtime/hook/activate.py``, read as text here
(the build environment cannot import the package). Sdists carry this folder too.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
import tarfile
import tempfile
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the hooks we do not change)

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_ACTIVATE = os.path.join(_ROOT, "poet_runtime", "hook", "activate.py")


def _constants() -> dict:
    with open(_ACTIVATE, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("PTH_NAME", "PTH_LINE"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def _add_pth(wheel_path: str) -> None:
    constants = _constants()
    name, data = constants["PTH_NAME"], constants["PTH_LINE"].encode("utf-8")
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(wheel_path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    folder = os.path.dirname(wheel_path)
    fd, temporary = tempfile.mkstemp(suffix=".whl", dir=folder)
    os.close(fd)
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info, content in entries:
            if info.filename == name:
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                lines = [line for line in content.decode().splitlines() if line and not line.startswith(name + ",")]
                lines.insert(len(lines) - 1, f"{name},sha256={digest},{len(data)}")
                content = ("\n".join(lines) + "\n").encode()
                pth_info = zipfile.ZipInfo(name, date_time=info.date_time)
                pth_info.external_attr = 0o644 << 16
                pth_info.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(pth_info, data)
            target.writestr(info, content)
    os.replace(temporary, wheel_path)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    _add_pth(os.path.join(wheel_directory, name))
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_pth(os.path.join(wheel_directory, name))
    return name


def build_sdist(sdist_directory, config_settings=None):
    name = _setuptools.build_sdist(sdist_directory, config_settings)
    path = os.path.join(sdist_directory, name)
    with tarfile.open(path, "r:gz") as source:
        members = [(member, source.extractfile(member).read() if member.isfile() else None) for member in source.getmembers()]
    top = members[0][0].name.split("/")[0]
    fd, temporary = tempfile.mkstemp(suffix=".tar.gz", dir=sdist_directory)
    os.close(fd)
    import io

    with tarfile.open(temporary, "w:gz", format=tarfile.PAX_FORMAT) as target:
        for member, content in members:
            if member.name.startswith(f"{top}/_pth_build/"):
                continue
            target.addfile(member, io.BytesIO(content) if content is not None else None)
        for filename in sorted(os.listdir(_HERE)):
            if filename.endswith(".py"):
                target.add(os.path.join(_HERE, filename), arcname=f"{top}/_pth_build/{filename}")
    os.replace(temporary, path)
    return name
