"""Authentication steps: who is calling (`step`), with bearer JWTs (`tokens`, keys from
`jwks`) or API keys (`api_keys`, kept hashed in PostgreSQL by `keystore`)."""
