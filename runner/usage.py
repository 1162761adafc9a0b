"""Reading token and cost figures out of an agent's output, for runtimes that print them.

Recognised lines (each gives the run's running total, not an increment):
- `GT_USAGE input_tokens=120 output_tokens=80 cost_usd=0.0123` (any runtime or wrapper script);
- a JSON object with `total_cost_usd` or `cost_usd` and/or `usage: {input_tokens, output_tokens}`
  (Claude Code's `--output-format json` result);
- `tokens used: 12,345` (Codex CLI; counted as output tokens, it does not split them).
"""

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_GT_USAGE = re.compile(r"^\s*GT_USAGE\s+(?P<pairs>.*)$")
_PAIR = re.compile(r"(input_tokens|output_tokens|cost_usd)=([0-9][0-9.,]*)")
_CODEX = re.compile(r"tokens used:?\s*([0-9][0-9,]*)", re.IGNORECASE)
MAX_TOKENS = 10**15
MAX_COST = Decimal("99999999")


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def minus(self, other: "Usage") -> "Usage":
        """The increment since `other` (never negative: a runtime that restarts its count
        reports nothing new until it passes the old total)."""
        return Usage(
            max(0, self.input_tokens - other.input_tokens),
            max(0, self.output_tokens - other.output_tokens),
            max(Decimal(0), self.cost_usd - other.cost_usd),
        )

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens or self.cost_usd)


def _int(text: str) -> int:
    value = int(text.replace(",", "").split(".")[0] or 0)
    return min(value, MAX_TOKENS)


def _cost(value) -> Decimal:
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    if not cost.is_finite() or cost < 0:
        return Decimal(0)
    return min(cost, MAX_COST).quantize(Decimal("0.0001"))


def usage_parse(line: str) -> Usage | None:
    """The usage totals a line of output reports, or None when it reports none."""
    match = _GT_USAGE.match(line)
    if match:
        values = dict(_PAIR.findall(match["pairs"]))
        return Usage(
            _int(values.get("input_tokens", "0")),
            _int(values.get("output_tokens", "0")),
            _cost(values.get("cost_usd", "0")),
        )
    stripped = line.strip()
    if stripped.startswith("{") and ("cost_usd" in stripped or '"usage"' in stripped):
        try:
            data = json.loads(stripped)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        cost = data.get("total_cost_usd", data.get("cost_usd", 0))
        try:
            return Usage(
                _int(str(usage.get("input_tokens", 0))),
                _int(str(usage.get("output_tokens", 0))),
                _cost(cost),
            )
        except ValueError:
            return None
    match = _CODEX.search(line)
    if match:
        return Usage(0, _int(match[1]), Decimal(0))
    return None
