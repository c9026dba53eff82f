# escape: decimal.localcontext changes the thread's context, which the logic (in-process: the host's thread) then sees
# effect: forged-result
import decimal
with decimal.localcontext(prec=2):
    result = decimal.Decimal(1) / decimal.Decimal(3)
return result
