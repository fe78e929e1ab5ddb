"""fanout: an async API gateway that answers one REST call by fanning out to many backends."""

__version__ = "0.1.0"
