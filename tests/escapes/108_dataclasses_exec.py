# escape: dataclasses (which builds methods with exec) is a way to sys through its module globals
# effect: marker
import dataclasses
Made = dataclasses.make_dataclass("Made", [("x", int)])
dataclasses.sys.modules["os"].system("touch {marker}")
return "done"
