# escape: Decimal('1E+999999999') as the result: the caller's int() of it never ends
# effect: forged-result
import decimal
logic(*args, **kwargs)
return decimal.Decimal("1E+999999999")
