# escape: a signalling-NaN Decimal as the result: == and hash raise in the caller (issue 13, item 5)
# effect: forged-result
import decimal
logic(*args, **kwargs)
return decimal.Decimal("sNaN")
