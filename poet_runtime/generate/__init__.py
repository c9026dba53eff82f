"""Generators turn a function's spec into an enhanced module; checks decide if it may be used.

``spec`` reads a function from source (never executing it), ``builtin`` writes the
deterministic offline enhancement, ``checks`` vets any generator's output before it
is stored.
"""
