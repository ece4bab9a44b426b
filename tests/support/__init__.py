"""Helpers shared by the tests: servers, unique names, waiting for conditions."""
