"""The rate limits shared through PostgreSQL when no Redis is configured (issue #27, item 4;
app.security.ratelimit_pg): a token bucket per principal and the last refusals per source address. UNLOGGED on
PostgreSQL (migration 0028): counters, not records; lost at a crash, which only refills the buckets."""

from __future__ import annotations

from sqlalchemy import Boolean, Double, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class RateLimitBucket(Base):
    __tablename__ = "rate_limit_buckets"

    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    refilled_at: Mapped[float] = mapped_column(Double)  # seconds since the epoch, on the database's clock
    taken: Mapped[bool] = mapped_column(Boolean)  # whether the last request took a token


class RefusalWindow(Base):
    __tablename__ = "refusal_windows"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    # the times of its last refusals (seconds since the epoch), at most the limit's number
    times: Mapped[list[float]] = mapped_column(ARRAY(Double).with_variant(String(), "sqlite"))
