"""The prompt_optimization domain: its rules live in domain.toml beside this file."""
