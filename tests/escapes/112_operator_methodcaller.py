# escape: operator.methodcaller calls a dunder method by name (__subclasses__ of object)
# effect: marker
import operator
base = operator.attrgetter("__class__.__base__")(())
for c in operator.methodcaller("__subclasses__")(base):
    if c.__name__ == "Popen":
        c(["touch", "{marker}"]).wait()
return "done"
