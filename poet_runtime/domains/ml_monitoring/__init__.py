"""The ml_monitoring domain: its rules live in domain.toml beside this file."""
