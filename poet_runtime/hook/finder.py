"""The meta-path finder and the loader that compile selected modules through the rewrite.

The finder sits immediately before ``PathFinder`` on ``sys.meta_path`` and asks it to
do the finding, so path hooks, namespace packages, zip imports and ``importlib``'s
caches behave exactly as without us. It then takes over only a module that
(a) the selection picks, (b) the standard ``SourceFileLoader`` would load (any other
loader means another tool owns the module: pytest's rewriter, beartype, a zip), and
(c) contains ``poet`` (see ``scan``). Everything else gets the very spec ``PathFinder``
returned, so its code object and pyc are those of a run without the hook.

Hooks placed before ours (pytest's assertion rewriter inserts itself first) keep
their modules; hooks placed after ``PathFinder`` never see ours, as before.
"""

from __future__ import annotations

import os
from importlib.machinery import PathFinder, SourceFileLoader

from poet_runtime.generate.sources import remember_module_source
from poet_runtime.hook import cache, scan


_SEP = os.sep


class PoetLoader(SourceFileLoader):
    """A ``SourceFileLoader`` whose bytecode is the rewritten module, cached under our own tag."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        data = self.get_data(path)
        cached = cache.cache_file(path)
        key = cache.key(data, self.name)
        code = cache.load(cached, key, path)
        # The text the code comes from is remembered: a spec (and its version key) is read from
        # it at the first call, never from the file as it is then (it may have been edited since).
        stored = (cache.spec_index_file(cached), key)
        if code is not None:
            remember_module_source(path, data, stored=stored)
        else:
            from poet_runtime.hook.transform import compile_module

            try:
                code = compile_module(data, path, self.name, remember=True, stored=stored)
            except SyntaxError as error:
                # Drop our compile frames from the traceback; the error names the file and line.
                raise error.with_traceback(None) from None
            try:
                mode = self.path_stats(path).get("mode")
            except OSError:
                mode = None
            cache.store(cached, key, code, mode)
        return code

    def source_to_code(self, data, path, *, _optimize=-1):
        from poet_runtime.hook.transform import compile_module  # ast is loaded only when needed

        return compile_module(data, path, self.name, optimize=_optimize)

    def path_stats(self, path):
        status = os.stat(path)
        return {"mtime": status.st_mtime, "size": status.st_size, "mode": status.st_mode}


class PoetFinder:
    """Meta-path finder delegating to ``PathFinder``; see the module docstring."""

    def __init__(self, selection):
        self.selection = selection

    def find_spec(self, fullname, path=None, target=None):
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not SourceFileLoader:
            return spec
        origin = spec.origin
        folder, _, filename = origin.rpartition(_SEP)
        if not self.selection.selects(fullname, origin, folder) or not scan.has_poet(origin, folder, filename):
            return spec
        spec.loader = PoetLoader(fullname, origin)
        spec.cached = cache.cache_file(origin)
        return spec

    def invalidate_caches(self):
        # PathFinder is still on sys.meta_path and gets its own call from importlib.
        scan.forget()

    def __repr__(self):
        return "<poet_runtime.hook.PoetFinder>"
