# escape: a generator's frame through a computed name, then its builtins
# effect: marker
def gen():
    yield 1
g = gen()
frame = getattr(g, "gi_" + "frame")
b = getattr(frame, "f_" + "builtins")
b["__import__"]("os").system("touch {marker}")
return "done"
