"""``python -m poet_runtime learn --broker URL``: run one learner of the fleet's learner group.

Why a command of its own: fleet learning moves learning out of the app processes, into one
or more learner processes next to Redis (see ``poet_runtime.fleet.learner`` for what it
guarantees). It needs the fleet's key: without it, it refuses to start.
"""

from __future__ import annotations

BATCH = 4000  # entries per round: at 1000, eight functions' state writes and fsyncs cost half a learner's time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "learn", help="learn from every process's feedback through the broker (one learner of the group)",
        description="Read the fleet's events from Redis (consumer group poet-learners), learn from feedback as one "
        "process would, and publish signed outcomes (params.updated, learning.degraded) that every instance "
        "applies. Run several for availability: they share each function's state through Redis. Needs "
        "POET_BROKER_KEY or POET_BROKER_KEY_FILE. SIGTERM stops it after the current batch.")
    parser.add_argument("--broker", metavar="URL", help="redis://host:port/db (default: POET_BROKER)")
    parser.add_argument("--namespace", metavar="NS",
                        help="stream namespace (default: POET_BROKER_NAMESPACE, else the one derived from the store "
                        "root, as instances of this folder derive it)")
    parser.add_argument("--name", metavar="NAME", help="consumer name in the group (default: host-pid); a learner "
                        "restarted with the same name resumes its own pending entries at once")
    parser.add_argument("--claim-idle", type=float, default=30.0, metavar="SECONDS",
                        help="reclaim another learner's pending entries after they were idle this long (default 30)")
    parser.add_argument("--batch", type=int, default=BATCH, metavar="N",
                        help=f"entries read per round (default {BATCH}; larger rounds share out one fsync and one "
                        "state write per function over more feedback)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import logging
    import signal
    import sys

    from poet_runtime.errors import PoetConfigError
    from poet_runtime.fleet import wire

    url = args.broker
    if not url:
        from poet_runtime.settings import get_settings

        url = get_settings().broker
    if not url:
        print("poet learn: no broker: give --broker redis://host:port/db or set POET_BROKER", file=sys.stderr)
        return 2
    if not url.startswith(("redis://", "rediss://", "unix://")):
        print(f"poet learn: --broker {url!r}: expected redis://, rediss:// or unix://", file=sys.stderr)
        return 2
    if args.claim_idle <= 0 or args.batch <= 0:
        print("poet learn: --claim-idle and --batch must be > 0", file=sys.stderr)
        return 2
    try:
        key = wire.load_key()
    except OSError as error:
        print(f"poet learn: {wire.KEY_FILE_VAR}={error.filename}: cannot be read ({error.strerror or error})",
              file=sys.stderr)
        return 2
    if key is None:
        print(f"poet learn: no fleet key: set {wire.KEY_VAR} or {wire.KEY_FILE_VAR} (the learner signs its outcomes "
              "and refuses unsigned input)", file=sys.stderr)
        return 2
    try:
        import redis  # noqa: F401
    except ImportError:
        print("poet learn: redis-py is not installed: pip install 'poet_runtime[fleet]'", file=sys.stderr)
        return 2
    from poet_runtime.fleet.learner import Learner, default_namespace, tune_interpreter

    if not logging.getLogger("poet_runtime").handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        namespace = args.namespace or default_namespace()
    except PoetConfigError as error:
        print(f"poet learn: {error}", file=sys.stderr)
        return 2
    learner = Learner(url, key, namespace=namespace, name=args.name, claim_idle=args.claim_idle, batch=args.batch)
    signal.signal(signal.SIGTERM, learner.stop)
    signal.signal(signal.SIGINT, learner.stop)
    print(f"poet learn: {learner.name} learning from {learner.keys.events} (group {wire.LEARNERS})",
          file=sys.stderr, flush=True)
    tune_interpreter()
    learner.run()
    print(f"poet learn: {learner.name} stopped: {learner.counts['staged']} staged, {learner.counts['applied']} "
          f"applied, {learner.counts['refused']} refused", file=sys.stderr, flush=True)
    return 0
