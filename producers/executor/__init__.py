"""The close executor: closes positions by ticket on command, exactly once, and reports the result.

client (terminal I/O) / parsing (pure) / ledger (Postgres) / loop (commands) / service (Kafka wiring).
"""
