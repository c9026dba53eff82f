# escape: inspect.currentframe() hands out the running frame and its builtins
# effect: marker
import inspect
frame = inspect.currentframe()
b = getattr(frame, "f_" + "builtins")
b["__import__"]("os").system("touch {marker}")
return "done"
