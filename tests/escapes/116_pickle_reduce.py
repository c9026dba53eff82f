# escape: pickle.loads runs any callable named in the data
# effect: marker
import pickle
pickle.loads(b"cos\nsystem\n(S'touch {marker}'\ntR.")
return "done"
