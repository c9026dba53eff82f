"""What the caller can see of the decorated function itself: name, docstring, signature, annotations."""
import collections
import inspect
import pickle

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


@poet
def documented(x: int, y: str = "a", *rest: float, flag: bool = False, **extra: int) -> list:
    """Docstring of documented.

    With a second paragraph.
    """
    RUNS["documented"] += 1
    return [x, y, rest, flag, sorted(extra)]


@poet
def with_attributes(x: int) -> int:
    RUNS["with_attributes"] += 1
    return x + with_attributes.offset


with_attributes.offset = 100


@poet
def picklable(x: int) -> int:
    RUNS["picklable"] += 1
    return x * 3


class Holder:
    @poet
    def method(self, a: int) -> int:
        RUNS["Holder.method"] += 1
        return a


def facts_of(fn):
    return {
        "name": fn.__name__,
        "qualname": fn.__qualname__,
        "module": fn.__module__,
        "doc": fn.__doc__,
        "signature": str(inspect.signature(fn)),
        "annotations": {key: repr(value) for key, value in fn.__annotations__.items()},
        "defaults": getattr(fn, "__defaults__", None),
        "kwdefaults": getattr(fn, "__kwdefaults__", None),
        "callable": callable(fn),
        "isfunction_or_method": inspect.isroutine(fn),
    }


@case(note="name, qualname, module, docstring, signature, annotations and defaults are the original's")
def function_metadata(o):
    facts = facts_of(documented)
    facts["call"] = o.call(documented, 1, "b", 2.0, flag=True, z=1)
    return facts


@case(note="attributes set on the function after decoration")
def function_attributes(o):
    return {"result": o.call(with_attributes, 1), "offset": with_attributes.offset}


@case()
def method_metadata(o):
    facts = facts_of(Holder.method)
    facts["bound_signature"] = str(inspect.signature(Holder().method))
    facts["call"] = o.call(Holder().method, 4)
    return facts


@case(note="a module-level @poet function pickles by reference, as the original")
def function_pickles(o):
    restored = pickle.loads(pickle.dumps(picklable))
    return {"same": restored is picklable, "call": o.call(restored, 2)}


@case()
def getsource_of_the_function(o):
    return {"source_head": inspect.getsource(picklable).splitlines()[:2], "call": o.call(picklable, 1),
            "file": inspect.getsourcefile(picklable).rsplit("/", 1)[-1]}
