"""Inventory: a slow, synchronous legacy system (WSGI on a threaded server, XML answers) and
its blocking client library, the kind of SDK the gateway runs on a `legacy` thread pool.

Run with ``python -m services.inventory --port 8103 [--latency 50ms] [--fd N]``.
"""
