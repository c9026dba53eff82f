"""Which errors of a model call are worth another attempt: rate limits (429) and timeouts.

Why here: model clients raise their own classes (``RateLimitError``, ``APITimeoutError``,
an HTTP error with ``status_code`` 429), none of them a builtin the domain file could
name. In-process the error's class names and status are read; in a sandbox only the
nearest builtin class and the message cross, so the message is read too ("429",
"rate limit", "too many requests", "timed out").
"""

_RATE_NAMES = ("ratelimit", "toomanyrequests", "throttl")
_RATE_TEXT = ("429", "rate limit", "rate-limit", "ratelimit", "too many requests", "throttl")
_TIMEOUT_TEXT = ("timed out", "timeout", "time out", "deadline exceeded")


def _class_names(error):
    try:
        return [cls.__name__.lower() for cls in type(error).__mro__]
    except Exception:
        return []


def _status(error):
    for name in ("status_code", "status", "http_status", "code"):
        try:
            value = getattr(error, name, None)
        except Exception:
            value = None
        if type(value) is int:
            return value
    return None


def _text(error):
    try:
        return str(error).lower()[:2000]
    except Exception:
        return ""


def is_rate_limit(error):
    if _status(error) == 429:
        return True
    if any(marker in name for name in _class_names(error) for marker in _RATE_NAMES):
        return True
    text = _text(error)
    return any(marker in text for marker in _RATE_TEXT)


def is_timeout(error):
    if isinstance(error, TimeoutError):
        return True
    if any("timeout" in name for name in _class_names(error)):
        return True
    text = _text(error)
    return any(marker in text for marker in _TIMEOUT_TEXT)


def worth_retry(error, kinds=("rate_limit", "timeout")):
    """Whether ``error`` is one of ``kinds`` ("rate_limit", "timeout")."""
    return ("rate_limit" in kinds and is_rate_limit(error)) or ("timeout" in kinds and is_timeout(error))
