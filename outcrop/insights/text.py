"""The report as terminal tables: the five business metrics, by group, then the bill."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _money(value: float | None) -> str:
    """Token prices are fractions of a cent: six decimals keep them visible."""
    return "-" if value is None else f"{value:,.6f}"


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    grid = [headers, *rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))).rstrip() for row in grid]
    return "\n".join(lines)


def _group_label(key: Any, by: str) -> str:
    return key if key is not None else ("(no domain)" if by == "domain" else "-")


def render(report: dict[str, Any]) -> str:
    t, cur, by = report["totals"], report["currency"], report["groupBy"]
    sat, arpu, conv, eff = t["satisfaction"], t["arpu"], t["conversion"], t["efficiency"]
    lat, ttft = eff["latencyMs"], eff["firstTokenMs"]
    out = [f"Insights for account {report['accountId']}, {report['since'][:16]}Z .. {report['until'][:16]}Z, "
           f"by {by}, in {cur}", ""]
    out += [
        f"requests       {_int(t['requests'])} ({_int(t['errors'])} failed); tokens {_int(t['inputTokens'])} in, "
        f"{_int(t['outputTokens'])} out",
        f"satisfaction   thumbs-up {_pct(sat['thumbsUpRate'])} ({sat['thumbsUp']} up, {sat['thumbsDown']} down); "
        f"mean rating {_num(sat['meanRating'])} of {sat['ratings']} ratings; CSAT {_pct(sat['csat'])}; "
        f"{sat['responses']} responses",
        f"ARPU           {_num(arpu['arpu'], 4)} {cur} (revenue {_num(arpu['revenue'])} from "
        f"{arpu['activeUsers']} active users; {_num(arpu['unattributedRevenue'])} from users with no invocation)",
        f"conversion     {_pct(conv['conversionRate'])} of {conv['sessions']} sessions "
        f"({conv['convertedSessions']} converted); users {_pct(conv['userConversionRate'])} "
        f"({conv['convertedUsers']} of {conv['users']})",
        f"efficiency     latency p50/p95/p99 {_int(lat['p50'])}/{_int(lat['p95'])}/{_int(lat['p99'])} ms; "
        f"first token p50/p95/p99 {_int(ttft['p50'])}/{_int(ttft['p95'])}/{_int(ttft['p99'])} ms; "
        f"{_num(eff['outputTokensPerSecond'], 1)} output tokens/s",
        f"               cost {_money(eff['cost'])}; per request {_money(eff['costPerRequest'])}; "
        f"per 1k tokens {_money(eff['costPer1kTokens'])}",
        "",
        f"By {by}",
    ]
    rows = []
    for g in report["groups"]:
        s, a, c, e = g["satisfaction"], g["arpu"], g["conversion"], g["efficiency"]
        rows.append((_group_label(g["key"], by), _int(g["requests"]), _int(g["errors"]), _pct(s["thumbsUpRate"]),
                     _num(s["meanRating"]), _pct(s["csat"]), _int(s["responses"]), _int(a["activeUsers"]),
                     _num(a["arpu"], 4), _int(c["sessions"]), _pct(c["conversionRate"]),
                     _int(e["latencyMs"]["p50"]), _int(e["latencyMs"]["p95"]), _int(e["latencyMs"]["p99"]),
                     _int(e["firstTokenMs"]["p50"]), _num(e["outputTokensPerSecond"], 1), _money(e["cost"]),
                     _money(e["costPerRequest"]), _money(e["costPer1kTokens"])))
    out.append(table((by.upper(), "REQUESTS", "FAILED", "THUMBS-UP", "RATING", "CSAT", "RESPONSES", "USERS", "ARPU",
                      "SESSIONS", "CONVERSION", "P50 MS", "P95 MS", "P99 MS", "TTFT P50", "TOK/S", "COST",
                      "COST/REQ", "COST/1K TOK"), rows) if rows else "  (no invocations or feedback in the period)")
    if report["conversions"]:
        out += ["", "Conversions", table(("OUTCOME", "COUNT", "VALUE"), [
            (c["name"], _int(c["count"]), _num(c["value"])) for c in report["conversions"]])]
    out += ["", "Cross-domain (live feedback by requestMetadata.domain; evaluation scores by category)"]
    if report["crossDomain"]:
        out.append(table(("DOMAIN", "THUMBS-UP", "RATING", "CSAT", "RESPONSES", "EVALUATION"), [
            (_group_label(d["domain"], "domain"), _pct(d["thumbsUpRate"]), _num(d["meanRating"]), _pct(d["csat"]),
             _int(d["responses"]), "; ".join(f"{metric} " + ", ".join(f"{m}={s:.3f}" for m, s in sorted(by.items()))
                                             for metric, by in sorted(d["evaluation"].items())) or "-")
            for d in report["crossDomain"]]))
    else:
        out.append("  (no feedback and no evaluation scores)")
    if report.get("guardrails"):
        out += ["", "Guardrails (texts checked, and how often a guardrail intervened, by requestMetadata.domain)",
                table(("DOMAIN", "CHECKS", "INTERVENTIONS", "RATE"), [
                    (_group_label(g["domain"], "domain"), _int(g["checks"]), _int(g["interventions"]),
                     _pct(g["interventionRate"])) for g in report["guardrails"]])]
    bill = report["bill"]
    out += ["", f"Bill ({cur})"]
    if bill["onDemand"]:
        out.append(table(("ON-DEMAND MODEL", "INPUT TOKENS", "OUTPUT TOKENS", "IN /1K", "OUT /1K", "COST"), [
            (b["modelId"], _int(b["inputTokens"]), _int(b["outputTokens"]), _money(b["inputPricePer1kTokens"]),
             _money(b["outputPricePer1kTokens"]), _money(b["cost"])) for b in bill["onDemand"]]))
    if bill["provisioned"]:
        out.append(table(("PROVISIONED", "UNITS", "COMMITMENT", "MU-HOURS", "PER MU-HOUR", "COST", "UTILISATION"), [
            (p["provisionedModelName"], _int(p["modelUnits"]), p["commitmentDuration"] or "none",
             _num(p["modelUnitHours"], 3), _num(p["pricePerModelUnitHour"]), _money(p["cost"]),
             _pct(p["utilisation"])) for p in bill["provisioned"]]))
    if bill.get("evaluationJobs"):
        out += [f"of which evaluation jobs {_money(bill['evaluationCost'])} {cur} (in the lines above, left out of "
                "the application's metrics):",
                table(("EVALUATION JOB", "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"), [
                    (e["evaluationJobArn"], _int(e["requests"]), _int(e["inputTokens"]), _int(e["outputTokens"]),
                     _money(e["cost"])) for e in bill["evaluationJobs"]])]
    if bill.get("batch"):
        out += [f"batch inference {_money(bill['batchCost'])} {cur} (at the batch price; left out of the application's "
                "metrics):",
                table(("BATCH MODEL", "INPUT TOKENS", "OUTPUT TOKENS", "IN /1K", "OUT /1K", "COST"), [
                    (b["modelId"], _int(b["inputTokens"]), _int(b["outputTokens"]), _money(b["inputPricePer1kTokens"]),
                     _money(b["outputPricePer1kTokens"]), _money(b["cost"])) for b in bill["batch"]]),
                table(("BATCH JOB", "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST"), [
                    (j["batchJobArn"], _int(j["requests"]), _int(j["inputTokens"]), _int(j["outputTokens"]),
                     _money(j["cost"])) for j in bill["batchJobs"]])]
    out.append(f"TOTAL {_money(bill['total'])} {cur}")
    return "\n".join(out) + "\n"
