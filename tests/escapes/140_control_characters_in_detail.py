# escape: a failure whose message forges log lines (ESC, CR, BS) and reorders text (bidi) in the fallback's log record (issue 13, item 6)
# effect: forged-log
raise ValueError("\x1b[2K\r\x08\x08INFO all good \u202e\u2066gnorw\u2069 \x1b]0;title\x07")
