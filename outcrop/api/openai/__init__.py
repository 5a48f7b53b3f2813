"""The OpenAI-compatible door: `/v1` (and `/openai/v1`) answered through the Bedrock runtime (door.py).

chat.py, completions.py, embeddings.py and models.py translate requests and answers (pure functions);
fields.py holds the checks they share, errors.py OpenAI's error shape.
"""

from outcrop.api.openai.door import OpenAIDoor, is_door_path

__all__ = ["OpenAIDoor", "is_door_path"]
