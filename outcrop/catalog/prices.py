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
#: The table every imported model (usage records name it by its ARN) is priced from, over the defaults; a
#: [models."<imported model ARN>"] table still overrides it for one model.
IMPORTED_MODELS = "imported_models"


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
        if ":imported-model/" in model_id:
            merged.update(self.table.get(IMPORTED_MODELS, {}).get(kind, {}))
        merged.update(self.table.get("models", {}).get(model_id, {}).get(kind, {}))
        return merged

    def mu_hour(self, model_id: str, commitment: str | None) -> float:
        return float(self._section(model_id, "provisioned")[COMMITMENT_KEYS[commitment]])

    def on_demand(self, model_id: str) -> tuple[float, float]:
        """(input, output) price per 1,000 tokens."""
        section = self._section(model_id, "on_demand")
        return float(section["input_per_1k_tokens"]), float(section["output_per_1k_tokens"])

    def batch(self, model_id: str) -> tuple[float, float]:
        """(input, output) price per 1,000 tokens of a batch inference job: the model's own batch prices, else
        `on_demand_share` of its on-demand prices (0.5, Bedrock's discount, unless the table says otherwise)."""
        section = self._section(model_id, "batch")
        if "input_per_1k_tokens" in section and "output_per_1k_tokens" in section:
            return float(section["input_per_1k_tokens"]), float(section["output_per_1k_tokens"])
        share = float(section.get("on_demand_share", 0.5))
        price_in, price_out = self.on_demand(model_id)
        return price_in * share, price_out * share
