"""`make chaos`: a seeded fault schedule over the separate-process topology, with invariants checked
after every round. See chaos/run.py for the round and README "Chaos" for what is checked."""
