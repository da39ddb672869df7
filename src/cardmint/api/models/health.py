"""What the health endpoints answer, 200 or 503 alike. Their keys are snake_case, as
Patroni's and the runbook's probes read them (not the /v1 camelCase)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["ok", "unavailable"]


class Alive(BaseModel):
    status: Literal["ok"]
    version: str


class Ready(BaseModel):
    status: Status
    revision: str | None = Field(None, description="The schema's revision (alembic)")
    head: str = Field(description="The revision this code expects")
    reason: str | None = None


class PoolFigures(BaseModel):
    size: int
    idle: int
    in_use: int
    max: int
    utilization_pct: float


class ReplicaState(BaseModel):
    name: str
    healthy: bool = Field(description="Reads may use it")
    lag_s: float | None
    error: str | None
    size: int
    idle: int
    in_use: int
    max: int
    utilization_pct: float


class PrimaryPool(PoolFigures):
    waiting: int = Field(description="Tasks waiting for a connection")
    replicas: list[ReplicaState]


class Primary(BaseModel):
    status: Status
    pool: PrimaryPool | None = None
    reason: str | None = None


class Replicas(BaseModel):
    status: Status
    max_lag_s: float
    replicas: list[ReplicaState]
