"""Fleet learning over Redis Streams: feedback from every process reaches one learner group,
and what it learns reaches every process.

Nothing here is imported unless ``POET_BROKER`` (``[tool.poet] broker``) is set or a
``--broker`` command runs; a user who sets nothing keeps the local journal alone. Parts:

- ``wire``: stream names, entry fields and signing, shared by both sides (the contract).
- ``publisher``: an instance's side; the flusher forwards the journal's own lines.
- ``follower``: an instance's side; applies the learner's signed outcomes.
- ``learner``: ``python -m poet_runtime learn --broker URL``, one consumer group.
- ``status``: ``python -m poet_runtime status --broker URL``.
"""
