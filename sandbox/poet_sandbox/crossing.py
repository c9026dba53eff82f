"""The guest side of a call whose logic runs in the host.

Generated code (Perceive, Enforce, the retry policy) may run in a sandbox, but the
user's logic never does: it is the function object ``@poet`` received, and it runs
in the host, in the caller's thread. So inside a sandbox, ``operate_prime`` is given
a ``LogicProxy``; calling it sends the arguments back to the host and waits for the
logic's result (or its exception) to come back.

Identity is kept by tokens: every top-level value the host sends has one, and a
value the guest passes on unchanged goes back as ``["h", token]``, so the host
hands the logic the caller's own object (mutations land where the caller sees
them) and returns the logic's own result object when Enforce left it alone.
Values that are not plain data stay in the host; the guest sees a ``HostRef``
holding only the names of their type's MRO.

Transport of one top-level value (lists, so no user dict can be mistaken for one):
host -> guest ``["d", data]`` or ``["r", [type names]]``;
guest -> host ``["h", token]`` or ``["d", data]``.
See docs/CONTRACTS.md, "Crossing a sandbox". Stdlib only.
"""

import builtins


class HostRef:
    """A value that stayed in the host; only its type's names crossed."""

    __slots__ = ("type_names",)

    def __init__(self, type_names):
        self.type_names = tuple(str(name) for name in type_names)

    def __repr__(self):
        return f"<host {self.type_names[0] if self.type_names else 'object'}>"


class CrossingError(Exception):
    """The host answered something the protocol does not allow."""


def _builtin_exception(name):
    cls = getattr(builtins, str(name), None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return Exception


class Session:
    """One call's crossing state: which guest objects stand for host values.

    ``send(message) -> answer`` is the door to the host (a blocking host import in
    the WASM guest, the protocol pipe in a worker); ``encode``/``decode`` are the
    sandbox's data codec.
    """

    def __init__(self, send, encode, decode, not_data=(TypeError,)):
        self.send = send
        self.encode = encode
        self.decode = decode
        self.not_data = not_data
        self.known = {}  # id(guest object) -> (token, object): values the host sent
        self.raised = {}  # id(stand-in exception) -> token
        self.logic_calls = 0
        self.returned = False  # the last logic call returned (not raised)

    # -- values ---------------------------------------------------------------------
    def take(self, token, item):
        """The guest value for one top-level value the host sent."""
        if type(item) is not list or len(item) != 2:
            raise CrossingError("a value from the host must be a [kind, payload] pair")
        kind, payload = item
        if kind == "r":
            value = HostRef(payload if type(payload) is list else ())
        elif kind == "d":
            value = self.decode(payload)
        else:
            raise CrossingError(f"unknown value kind {kind!r}")
        self.known[id(value)] = (token, value)
        return value

    def give(self, value):
        """How ``value`` goes back to the host: its own object, or data."""
        entry = self.known.get(id(value))
        if entry is not None and entry[1] is value:
            return ["h", entry[0]]
        if type(value) is HostRef:
            raise CrossingError("a HostRef that the host did not send in this call")
        return ["d", self.encode(value)]

    def take_call(self, args, kwargs):
        """The call's arguments (tokens 0.. for positions, then keyword values in order)."""
        taken_args = tuple(self.take(index, item) for index, item in enumerate(args))
        base = len(taken_args)
        taken_kwargs = {}
        for offset, (name, item) in enumerate(kwargs.items()):
            taken_kwargs[name] = self.take(base + offset, item)
        return taken_args, taken_kwargs

    # -- the logic --------------------------------------------------------------------
    def call_logic(self, args, kwargs, timeout=None):
        message = {
            "status": "logic",
            "args": [self.give(value) for value in args],
            "kwargs": {str(name): self.give(value) for name, value in kwargs.items()},
            "timeout": timeout,
        }
        self.logic_calls += 1
        self.returned = False
        answer = self.send(message)
        op = answer.get("op") if type(answer) is dict else None
        token = answer.get("token") if op else None
        if type(token) is not int:
            raise CrossingError(f"the host answered a logic call with {op!r}")
        if op == "logic_return":
            value = self.take(token, answer.get("result"))
            self.returned = True
            return value
        if op == "logic_raise":
            cls = _builtin_exception(answer.get("builtin"))
            message_text = str(answer.get("message", ""))[:2000]
            try:
                error = cls(message_text)
            except Exception:
                error = Exception(message_text)
            self.raised[id(error)] = (token, error)
            raise error
        raise CrossingError(f"the host answered a logic call with {op!r}")

    def token_of(self, error):
        """The host token of the logic's exception on ``error``'s chain, or None."""
        seen = 0
        while error is not None and seen < 50:
            entry = self.raised.get(id(error))
            if entry is not None and entry[1] is error:
                return entry[0]
            error = error.__cause__ or error.__context__
            seen += 1
        return None


class LogicProxy:
    """What ``operate_prime`` gets as ``logic`` inside a sandbox."""

    __slots__ = ("session",)

    def __init__(self, session):
        self.session = session

    def __call__(self, /, *args, **kwargs):  # a keyword named "self" is the logic's
        return self.session.call_logic(args, kwargs)

    def with_timeout(self, args, kwargs, seconds):
        """The call, with the timeout applied in the host around the real logic."""
        return self.session.call_logic(args, kwargs, seconds)


class AsyncLogicProxy(LogicProxy):
    """For an ``async`` original: calling it gives an awaitable that never suspends
    (the host awaits the real coroutine in the caller's task meanwhile)."""

    __slots__ = ()

    def __call__(self, /, *args, **kwargs):  # a keyword named "self" is the logic's
        return _Immediate(self.session, args, kwargs, None)

    def with_timeout(self, args, kwargs, seconds):
        return _Immediate(self.session, args, kwargs, seconds)


class _Immediate:
    __slots__ = ("session", "args", "kwargs", "timeout")

    def __init__(self, session, args, kwargs, timeout):
        self.session, self.args, self.kwargs, self.timeout = session, args, kwargs, timeout

    def __await__(self):
        return self.session.call_logic(self.args, self.kwargs, self.timeout)
        yield  # noqa: unreachable; makes this a generator


def is_proxy(fn) -> bool:
    return isinstance(fn, LogicProxy)
