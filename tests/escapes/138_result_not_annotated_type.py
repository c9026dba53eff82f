# escape: a result that does not fit the function's return annotation (-> str): a value the original never returns
# effect: forged-result
logic(*args, **kwargs)
return {{"not": "a str"}}
