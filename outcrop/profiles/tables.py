"""Application inference profiles and their tags. A deleted profile keeps its row (with `deleted_at`), so the
usage records that name it still say which model it served."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class ProfileStatus(StrEnum):
    """An inference profile's status (Bedrock has one value: a profile is usable as soon as it exists)."""

    ACTIVE = "ACTIVE"


class ProfileType(StrEnum):
    """Bedrock's `InferenceProfileType`: defined by the service (the geo-prefixed ids) or by an account."""

    SYSTEM_DEFINED = "SYSTEM_DEFINED"
    APPLICATION = "APPLICATION"


class InferenceProfileRow(Base):
    __tablename__ = "inference_profiles"

    #: `arn:aws:bedrock:REGION:ACCOUNT:application-inference-profile/ID`
    arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    #: The 12-character id at the end of the ARN.
    profile_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The model the profile copies, as a Bedrock model id (a catalog model or an alias; the geo prefix of a
    #: copied system profile is dropped): resolved at each call, so a changed alias moves the profile with it.
    model_id: Mapped[str] = mapped_column(String(140))
    #: `modelSource.copyFrom` as the caller gave it (a foundation model or system profile ARN).
    source_arn: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))  # a ProfileStatus
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class InferenceProfileTag(Base):
    __tablename__ = "inference_profile_tags"

    profile_arn: Mapped[str] = mapped_column(String(2048), ForeignKey("inference_profiles.arn"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
