"""Inference profiles: the account's application profiles, the system profiles, and the model aliases."""
