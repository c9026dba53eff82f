# escape: numbers.Number.register(str) changes isinstance() for the whole process (the host, in-process)
# effect: mutate-host
import numbers
numbers.Integral.register(str)
return "done"
