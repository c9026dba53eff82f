# escape: functools.update_wrapper merges a stdlib module's globals into the generated module (issue 13, item 1)
# effect: marker
import functools
import statistics
def sink():
    pass
functools.update_wrapper(sink, statistics.mean, assigned=(), updated=("__globals__",))
sys.modules["os"].system("touch {marker}")
return "done"
