# escape: an exception's __traceback__.tb_frame, through computed names, to the frame's builtins
# effect: marker
try:
    1 / 0
except ZeroDivisionError as error:
    tb = getattr(error, "__trace" + "back__")
    frame = getattr(tb, "tb_" + "frame")
    b = getattr(frame, "f_" + "builtins")
    b["__import__"]("os").system("touch {marker}")
return "done"
