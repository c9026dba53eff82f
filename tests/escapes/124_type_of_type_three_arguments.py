# escape: type(type(0)) is type itself; its three-argument form builds a result whose == and hash raise in the caller
# effect: forged-result
T = type(type(0))
def boom(*args):
    raise RuntimeError("poisoned")
Poison = T("Poison", (), {{"__eq__": boom, "__hash__": boom}})
logic(*args, **kwargs)
return Poison()
