# escape: generated code raises CircuitOpenError on purpose: the caller would never see the original's answer
# effect: forged-result
from poet_sandbox.errors import CircuitOpenError
raise CircuitOpenError("forged: the circuit is open")
