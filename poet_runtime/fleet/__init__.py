"""Fleet learning over Redis Streams: feedback from every process reaches one learner group,
and what it learns reaches every process.

Nothing here is imported unless ``POET_BROKER`` (``[tool.poet] broker``) is set or a
``--broker`` command runs; a user who sets nothing keeps the local journal alone. Parts:

- ``wire``: stream names, entry fields, signing and judging (stamps, the ledger), the learner's
  seals and the size-bounded reads, shared by both sides (the contract).
- ``publisher``: an instance's side; the flusher forwards the journal's own lines and heartbeats.
- ``follower``: an instance's side; applies the learners' signed outcomes.
- ``regenerate``: an instance's side; the one elected instance regenerates on a signed verdict.
- ``learner``: ``python -m poet_runtime learn --broker URL``, one member of a consumer group: its
  loop and *apply*; ``staging`` its *stage* step; ``learner_rules`` what a feedback does to a
  state; ``learner_state`` the state as JSON; ``learner_fast`` the proposal from an index;
  ``learner_versions`` following the fleet's promotions and rollbacks.
- ``status``: ``python -m poet_runtime status --broker URL``.
"""
