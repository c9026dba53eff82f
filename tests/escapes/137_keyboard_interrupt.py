# escape: a forged KeyboardInterrupt from generated code
# effect: forged-result
raise KeyboardInterrupt
