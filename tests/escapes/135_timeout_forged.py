# escape: generated code makes up a TimeoutError after the logic returned
# effect: forged-result
logic(*args, **kwargs)
raise TimeoutError("forged: call exceeded its timeout")
