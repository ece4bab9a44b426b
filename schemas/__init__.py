"""Event contracts: the envelope, every payload, every topic, and the wire codec."""

from schemas.codec import DecodeError, decode, encode, encode_all, encode_key
from schemas.envelope import Envelope, Payload, derive_id, derived, observed, utcnow
from schemas.topics import ALL_TOPICS, Topic

__all__ = [
    "ALL_TOPICS", "DecodeError", "Envelope", "Payload", "Topic", "decode", "derive_id", "derived", "encode",
    "encode_all", "encode_key", "observed", "utcnow",
]
