"""print(), stderr, logging and warnings inside the function: the caller sees them, from the user's code."""
import collections
import logging
import sys
import warnings

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
log = logging.getLogger("fidelity.output")
log.setLevel(logging.DEBUG)


@poet
def chatty(name: str) -> int:
    RUNS["chatty"] += 1
    print("hello", name)
    print("no newline", end="")
    return len(name)


@poet
def to_stderr(message: str) -> None:
    RUNS["to_stderr"] += 1
    print("warning:", message, file=sys.stderr)
    sys.stderr.write("raw write\n")


@poet
def writes_stdout(parts: list[str]) -> int:
    RUNS["writes_stdout"] += 1
    return sum(sys.stdout.write(part) for part in parts)


@poet
def logs(level: str, value: int) -> int:
    RUNS["logs"] += 1
    log.info("value is %s", value)
    getattr(log, level)("level %s for %d", level, value)
    return value


@poet
def logs_exception(x: int) -> str:
    RUNS["logs_exception"] += 1
    try:
        return str(1 // x)
    except ZeroDivisionError:
        log.exception("cannot divide by %d", x)
        return "failed"


@poet
def root_logger(x: int) -> int:
    RUNS["root_logger"] += 1
    logging.warning("root logger says %d", x)
    return x


@poet
def warns(x: int) -> int:
    RUNS["warns"] += 1
    warnings.warn(f"x is {x}", UserWarning)
    return x


@poet
def deprecated(x: int) -> int:
    RUNS["deprecated"] += 1
    warnings.warn("deprecated(): use something else", DeprecationWarning, stacklevel=2)
    return x


@poet
def runtime_warning(values: list[float]) -> float:
    RUNS["runtime_warning"] += 1
    warnings.warn(RuntimeWarning("values look odd"))
    return sum(values)


@poet
def prints_and_fails(x: int) -> int:
    RUNS["prints_and_fails"] += 1
    print("before the failure")
    raise ValueError(x)


@poet
def flushes(lines: int) -> int:
    RUNS["flushes"] += 1
    for number in range(lines):
        print(f"line {number}", flush=True)
    return lines


@poet
def big_output(n: int) -> int:
    RUNS["big_output"] += 1
    print("x" * n)
    return n


@case()
def print_to_stdout(o):
    return {"result": o.call(chatty, "ann")}


@case()
def print_to_stderr(o):
    return {"result": o.call(to_stderr, "careful")}


@case()
def sys_stdout_write(o):
    return {"result": o.call(writes_stdout, ["a", "bc"])}


@case()
def logging_records(o):
    return {"result": o.call(logs, "warning", 3), "debug": o.call(logs, "debug", 4)}


@case()
def logging_exception_with_traceback(o):
    return {"result": o.call(logs_exception, 0)}


@case()
def root_logging(o):
    return {"result": o.call(root_logger, 5)}


@case(note="warnings.warn: category, message, the user's file and line")
def user_warning(o):
    return {"result": o.call(warns, 2)}


@case(note="stacklevel=2 names the caller's line")
def deprecation_warning_stacklevel_2(o):
    return {"result": o.call(deprecated, 1)}


@case()
def warning_instance(o):
    return {"result": o.call(runtime_warning, [1.0, 2.0])}


@case()
def output_before_an_exception(o):
    o.call(prints_and_fails, 9)


@case()
def print_with_flush(o):
    return {"result": o.call(flushes, 3)}


@case(note="70 KB of output (more than a sandbox's 64 KB output limit): all of it reaches the caller")
def large_output(o):
    return {"result": o.call(big_output, 70_000)}
