# escape: raise SystemExit from generated code: the user's program would end
# effect: forged-result
raise SystemExit(3)
