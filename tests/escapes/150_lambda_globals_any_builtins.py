# escape: a function object exposes its globals (the shared 12_lambda_globals, for a module or a dict as __builtins__)
# effect: marker
g = (lambda: 0).__globals__
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
