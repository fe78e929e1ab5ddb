"""The config file: its value types, models, checks and loader; the process settings."""
