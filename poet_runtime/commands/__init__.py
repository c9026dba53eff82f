"""Subcommands of ``python -m poet_runtime`` / ``poet``, discovered at start-up.

Every module here (not starting with ``_``) is imported by ``poet_runtime.cli`` and must
expose ``register(subparsers)``: add one or more parsers with
``subparsers.add_parser(name, help=..., description=...)`` and give each a handler with
``parser.set_defaults(handler=function)``, where ``function(args) -> int`` returns the
exit code (0 ok, 1 failure, 2 usage/config error).

Why the rules below: ``python -m poet_runtime --help`` imports every command module, so
``register`` and module import time must stay cheap. Import heavy things (rich, the
generators, backends, litellm, wasmtime) inside the handler, not at module top.
"""
