"""The package list, computed so that nothing has to be added to it by hand.

Everything else about the build is in pyproject.toml. The packages on disk under
poet_runtime/ are found; sandbox/ and policies/ are shipped as poet_runtime._data
(see [tool.setuptools.package-dir] there).
"""

from setuptools import find_packages, setup

DATA_PACKAGES = [
    "poet_runtime._data.sandbox",
    "poet_runtime._data.sandbox.poet_sandbox",
    "poet_runtime._data.sandbox.harness",
    "poet_runtime._data.policies",
]

setup(packages=find_packages(include=["poet_runtime", "poet_runtime.*"]) + DATA_PACKAGES)
