"""The aggregation engine: request context, templates, plan, execute, merge.

Pure: no Starlette, aiohttp or asyncpg import reaches it (tests/test_layout.py checks), so it
is tested as tables, in isolation."""
