"""Producers: everything that reads MT5 terminals or the signal platform and publishes to Kafka."""
