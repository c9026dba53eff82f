# escape: an int of 5000 digits as the result (past Python's int/str limit: str() of it raises in the caller)
# effect: forged-result
logic(*args, **kwargs)
return 10 ** 5000
