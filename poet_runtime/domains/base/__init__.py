"""The base domain: its rules live in domain.toml beside this file."""
