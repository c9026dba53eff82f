"""``python -m poet_runtime feedback EXECUTION_ID --label ...``: feedback from outside the program.

Labels often arrive later and elsewhere (a reviewer, a batch job): this records them
durably against an execution written by any earlier process. The function learns from
it the next time a process loads it (or at once, if this is that process).
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "feedback", help="record feedback on one execution",
        description="Record feedback (a label, a rating, metrics, comments) on an execution by its id.")
    parser.add_argument("execution_id", metavar="EXECUTION_ID")
    parser.add_argument("--label", help="the right answer: true/false, a number or text")
    parser.add_argument("--rating", type=float, help="0..5")
    parser.add_argument("--metric", action="append", metavar="NAME=VALUE", help="a measured value (repeatable)")
    parser.add_argument("--comments", help="free text")
    parser.add_argument("--suggestion", action="append", help="a suggestion (repeatable)")
    parser.add_argument("--root", action="append", metavar="DIR", help="a store root holding events/ (repeatable)")
    parser.set_defaults(handler=run)


def parse_label(text: str | None):
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(args) -> int:
    import sys

    from poet_runtime.commands.events import default_roots
    from poet_runtime.learn.feedback import FeedbackError, feedback

    metrics = None
    if args.metric:
        metrics = {}
        for item in args.metric:
            name, _, value = item.partition("=")
            try:
                metrics[name.strip()] = float(value)
            except ValueError:
                print(f"feedback: --metric {item!r}: expected NAME=NUMBER", file=sys.stderr)
                return 2
    rating = args.rating
    if rating is not None and rating.is_integer():
        rating = int(rating)
    try:
        event_id = feedback(args.execution_id, label=parse_label(args.label), rating=rating, metrics=metrics,
                            comments=args.comments, suggestions=args.suggestion, roots=default_roots(args.root))
    except FeedbackError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(event_id)
    return 0
