"""Projections: consumers that materialise the Postgres tables from the topics."""
