"""The Faust worker: reconciliation, drawdown guard and market guard.

Each processor keeps its rules as pure functions in ``<processor>/rules.py`` (no I/O, no Faust);
``app.py`` wraps them in one thin batch task (decode, rule, publish) and keeps their state in tables.
"""
