"""The customer_service domain: its rules live in domain.toml beside this file."""
