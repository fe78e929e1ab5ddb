"""Dev tooling (`gateway demo`, the embedded PostgreSQL). Nothing in the product imports it
except the `gateway demo` command itself."""
