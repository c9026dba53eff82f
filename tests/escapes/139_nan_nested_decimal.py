# escape: a signalling NaN hidden inside a container of the result
# effect: forged-result
import decimal
logic(*args, **kwargs)
return {{"score": [1, 2, decimal.Decimal("-sNaN123")]}}
