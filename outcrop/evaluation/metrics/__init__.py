"""Automatic metrics, each an object that states its settings as a signature string (after sacrebleu).

Usable without the server: `Rouge(use_stemmer=True).corpus(predictions, references)`.
"""
