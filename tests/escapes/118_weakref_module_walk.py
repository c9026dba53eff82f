# escape: weakref's module globals lead to sys
# effect: marker
import weakref
weakref.sys.modules["os"].system("touch {marker}")
return "done"
