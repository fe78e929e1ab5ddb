"""Demo backend services that the fanout gateway fans out to in examples and end-to-end tests."""
