"""The catalog's table: models registered by users from their own folders or GGUF files."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    model_id: Mapped[str] = mapped_column(String(140), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    path: Mapped[str] = mapped_column(String(4096))
    weights_format: Mapped[str] = mapped_column(String(16))  # hf | gguf
    output_modality: Mapped[str] = mapped_column(String(16))  # TEXT | EMBEDDING
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
