"""The price table: on-demand token prices and provisioned model-unit hours, per base model."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TABLE = Path(__file__).with_name("prices.toml")
#: Commitment terms as Bedrock names them -> the price table's keys.
COMMITMENT_KEYS = {None: "no_commitment_per_mu_hour", "OneMonth": "one_month_per_mu_hour",
                   "SixMonths": "six_months_per_mu_hour"}


@dataclass(frozen=True)
class PriceTable:
    currency: str
    table: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        with Path(path or DEFAULT_TABLE).open("rb") as fh:
            table = tomllib.load(fh)
        return cls(table.get("currency", "USD"), table)

    def _section(self, model_id: str, kind: str) -> dict[str, float]:
        merged = dict(self.table.get("defaults", {}).get(kind, {}))
        merged.update(self.table.get("models", {}).get(model_id, {}).get(kind, {}))
        return merged

    def mu_hour(self, model_id: str, commitment: str | None) -> float:
        return float(self._section(model_id, "provisioned")[COMMITMENT_KEYS[commitment]])

    def on_demand(self, model_id: str) -> tuple[float, float]:
        """(input, output) price per 1,000 tokens."""
        section = self._section(model_id, "on_demand")
        return float(section["input_per_1k_tokens"]), float(section["output_per_1k_tokens"])
