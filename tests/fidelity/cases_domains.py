"""The shipped domains with valid inputs: nothing to repair, so the enhanced call is the original's."""
import collections
import statistics

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
SERVICE = {"calls": 0}


@poet(domain="ml_monitoring")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.25) -> dict:
    RUNS["detect_drift"] += 1
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    score = min(1.0, gap / (abs(statistics.fmean(reference)) or 1.0))
    return {"drift_detected": score > threshold, "score": score}


@poet(domain="ml_monitoring", optimize_for="drift_sensitivity")
def drift_with_training(current: list[float], reference: list[float], threshold: float = 0.3) -> dict:
    RUNS["drift_with_training"] += 1
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": min(1.0, gap), "p_value": 0.5}


@poet(domain="ml_monitoring")
def missing_ratio(batch: list[float]) -> float:
    RUNS["missing_ratio"] += 1
    return sum(1 for value in batch if value < 0) / len(batch)


@poet(domain="ml_monitoring")
def quality_report(batch: list[float], limits: tuple = (0.0, 10.0)) -> dict:
    RUNS["quality_report"] += 1
    low, high = limits
    outside = [value for value in batch if not low <= value <= high]
    return {"count": len(batch), "outside": outside, "score": 1 - len(outside) / len(batch)}


@poet(domain="api_operations")
def fetch_quote(symbol: str, currency: str = "USD", timeout: float = 1.0) -> dict:
    RUNS["fetch_quote"] += 1
    SERVICE["calls"] += 1
    return {"status": "success", "symbol": symbol, "currency": currency, "timeout": timeout, "price": 12.5}


@poet(domain="api_operations")
def submit_job(payload: dict, priority: int = 1) -> dict:
    RUNS["submit_job"] += 1
    payload["submitted"] = True
    return {"status": "pending", "priority": priority, "size": len(payload)}


@poet(domain="api_operations")
def health() -> str:
    RUNS["health"] += 1
    return "ok"


@poet(domain="api_operations")
def failing_call(code: int) -> dict:
    RUNS["failing_call"] += 1
    raise PermissionError(f"denied: {code}")


@case()
def ml_drift_valid_inputs(o):
    return {"no_drift": o.call(detect_drift, [1.0, 1.1, 0.9], [1.0, 1.0]),
            "drift": o.call(detect_drift, [2.0, 2.2], [1.0, 1.0], threshold=0.5)}


@case()
def ml_drift_with_an_objective(o):
    return {"default": o.call(drift_with_training, [1.0, 1.4], [1.0, 1.0]),
            "given": o.call(drift_with_training, [1.0], [1.0], 0.1)}


@case()
def ml_scalar_result(o):
    return {"ratio": o.call(missing_ratio, [1.0, -1.0, 2.0, 3.0])}


@case()
def ml_dict_with_other_fields(o):
    return {"report": o.call(quality_report, [1.0, 11.0, 5.0])}


@case()
def api_success(o):
    SERVICE["calls"] = 0
    return {"default": o.call(fetch_quote, "ACME"), "given": o.call(fetch_quote, "XYZ", "EUR", timeout=2.0),
            "service_calls": SERVICE["calls"]}


@case(note="the caller's payload dict is the one the logic marks")
def api_pending_mutates_payload(o):
    payload = {"job": "x"}
    return {"result": o.call(submit_job, payload, priority=3), "payload": payload}


@case()
def api_non_dict_result(o):
    return {"result": o.call(health)}


@case(note="a non-retryable user error in api_operations: raised once")
def api_user_error_not_retried(o):
    try:
        o.call(failing_call, 7)
    except PermissionError as error:
        return {"error": error}
