"""Outcrop: a self-hosted foundation-model platform behind Amazon Bedrock's own API."""

__version__ = "0.1.0"
