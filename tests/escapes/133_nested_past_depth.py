# escape: a result nested 1000 deep (the caller's repr or json of it overflows the stack)
# effect: forged-result
value = []
for _ in range(1000):
    value = [value]
logic(*args, **kwargs)
return value
