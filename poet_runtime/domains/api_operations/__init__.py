"""The api_operations domain: its rules live in domain.toml beside this file."""
