"""The poller: reads each account's terminal on an interval and publishes what it said.

client (terminal I/O) / parsing (pure) / loop (rounds and batches) / service (Kafka wiring).
"""
