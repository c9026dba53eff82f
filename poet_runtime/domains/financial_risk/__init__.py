"""The financial_risk domain: its rules live in domain.toml beside this file."""
