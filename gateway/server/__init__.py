"""Serving: uvicorn with batched accepts, connection counting and a drain on SIGTERM."""
