# escape: functools.reduce over getattr walks a dunder chain to the builtins
# effect: marker
import functools
def probe():
    pass
g = functools.reduce(getattr, ["__globals__"], probe)
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
