# escape: a note (what the checks report, logged and emitted as events) that forges log lines
# effect: forged-log
from poet_sandbox import validate
validate.note("mismatch", "x\r\x1b[1A", "\x1b[2KERROR forged \u202etxet\u202c")
logic(*args, **kwargs)
raise ValueError("\x1b[31mred\x1b[0m")
