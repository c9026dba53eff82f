"""``serve``: run the POET service (FastAPI on uvicorn; extra ``[service]``), or manage its API keys.

``serve [--host 127.0.0.1] [--port 8477] [--data DIR] [--store DIR] [--model NAME]`` serves the
store at ``--store`` (default: the store the runtime uses, ``POET_HOME`` or ``./.poet``) with its
keys, answer cache and templates in ``--data`` (default ``~/.local/share/poet/service``). It binds
127.0.0.1 unless ``--host`` says otherwise; a non-loopback host is allowed, with a warning.

Keys: ``serve --data DIR --add-key NAME --scope read|write|admin`` prints a new key once and
exits (only its SHA-256 is kept, in DIR/keys.json, mode 0600); ``--revoke-key NAME`` and
``--list-keys`` likewise. A running service sees key changes on its next request.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the POET service (REST API, metrics, dashboard) or manage its API keys",
        description="Serve a POET store over HTTP: templates, generation, feedback, functions, versions, "
        "events, /metrics and the dashboard. Binds 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8477, help="port (default 8477; 0 picks a free one)")
    parser.add_argument("--data", metavar="DIR", help="the service's own data: keys, answer cache, templates "
                        "(default ~/.local/share/poet/service)")
    parser.add_argument("--store", metavar="DIR", help="the .poet store to serve (default: POET_HOME, else ./.poet)")
    parser.add_argument("--model", metavar="NAME", help="generate with this LLM (a litellm model name) instead of "
                        "the built-in generator")
    parser.add_argument("--rate-limit", type=int, default=100, metavar="N",
                        help="requests per minute per key (default 100)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    keys = parser.add_argument_group("API keys (each of these changes DIR/keys.json and exits)")
    keys.add_argument("--add-key", metavar="NAME", help="make a key for NAME (replacing NAME's key) and print it once")
    keys.add_argument("--scope", choices=["read", "write", "admin"], default="read",
                      help="the new key's scope: read < write < admin, each including the ones before (default read)")
    keys.add_argument("--key-rate-limit", type=int, metavar="N",
                      help="the new key's own limit in requests per minute (default: the service's --rate-limit)")
    keys.add_argument("--revoke-key", metavar="NAME", help="remove NAME's key")
    keys.add_argument("--list-keys", action="store_true", help="list key names, scopes and creation times")
    parser.set_defaults(handler=run)


def _folders(args):
    from pathlib import Path

    from poet_runtime.service.app import data_dir_default

    data = Path(args.data).expanduser() if args.data else data_dir_default()
    if args.store:
        store = Path(args.store).expanduser()
    else:
        from poet_runtime.settings import get_settings

        settings = get_settings()
        store = settings.home if settings.home is not None else Path.cwd() / ".poet"
    return data.resolve(), store.resolve()


def _keys(args, data) -> int:
    from poet_runtime.commands import _render
    from poet_runtime.service.auth import KeyFileError, KeyStore

    store = KeyStore(data)
    try:
        if args.add_key:
            key = store.add(args.add_key, args.scope, args.key_rate_limit)
            print(key)
            print(f"key {args.add_key!r} (scope {args.scope}) added to {store.path}; it is shown only now",
                  file=sys.stderr)
            return 0
        if args.revoke_key:
            if not store.revoke(args.revoke_key):
                _render.error(f"{store.path}: no key named {args.revoke_key!r}")
                return 1
            print(f"key {args.revoke_key!r} revoked", file=sys.stderr)
            return 0
        records = store.records()
    except (KeyFileError, ValueError) as error:
        _render.error(str(error))
        return 2
    from poet_runtime.safe_text import visible

    _render.table(f"keys in {store.path}", ["name", "scope", "created", "rate limit"],
                  [[visible(r.name, allow_newlines=False), r.scope, r.created_at, r.rate_limit or "default"]
                   for r in records])
    return 0


def run(args) -> int:
    from poet_runtime.commands import _render

    data, store = _folders(args)
    if args.add_key or args.revoke_key or args.list_keys:
        return _keys(args, data)  # needs no web framework
    try:
        import fastapi  # noqa: F401  (the [service] extra: fastapi and uvicorn)
        import uvicorn
    except ImportError as error:
        _render.error(f"serve needs the [service] extra: pip install 'poet_runtime[service]' ({error})")
        return 2
    if args.rate_limit < 1:
        _render.error(f"--rate-limit: must be at least 1, not {args.rate_limit}")
        return 2
    import ipaddress

    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"poet serve: binding {args.host}: the service is reachable from other machines "
              "(every route but /health needs a key)", file=sys.stderr)
    data.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    from poet_runtime.service.app import create_app
    from poet_runtime.service.auth import KeyStore

    from poet_runtime.service.auth import KeyFileError

    try:
        known = KeyStore(data).records()
    except KeyFileError as error:
        _render.error(f"{error}; fix or remove it (then add keys with --add-key)")
        return 2
    if not known:
        print(f"poet serve: no API keys in {data}; make one with "
              f"`python -m poet_runtime serve --data {data} --add-key NAME --scope admin`", file=sys.stderr)
    app = create_app(data_dir=data, store_root=store, rate_limit=args.rate_limit, model=args.model)
    stopping = app.state.context.extras["stopping"]

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Event streams never end by themselves, and uvicorn waits for open responses before
            # it stops: tell them to end first (the graceful timeout is the backstop).
            stopping.set()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=5)
    Server(config).run()
    return 0
