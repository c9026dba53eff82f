"""Checks of amounts, rates and probabilities for the financial_risk domain.

Why here: these checks run in generated code wherever it runs, and they must treat a
``Decimal`` as the number it is, never through ``float`` (a cent lost to binary
rounding is a wrong decision). Nothing here converts a value: an argument that breaks
a rule is reported (a ``domain.warning`` note; the logic still gets it), and only a
result that is impossible (NaN, infinite, a probability outside [0, 1]) is refused.
"""

import math

from poet_sandbox import validate
from poet_sandbox.crossing import HostRef
from poet_sandbox.errors import EnforceError

RULES = ("non_negative", "positive", "rates", "probabilities")


def _is_decimal(value):
    kind = type(value)
    return kind.__name__ == "Decimal" and kind.__module__ == "decimal"


def is_number(value):
    """int, float, Decimal or Fraction (a bool is not an amount)."""
    kind = type(value)
    if kind is bool:
        return False
    if kind in (int, float) or _is_decimal(value):
        return True
    return kind.__name__ == "Fraction" and kind.__module__ == "fractions"


def is_finite(value):
    if _is_decimal(value):
        return value.is_finite()
    if type(value) is float:
        return math.isfinite(value)
    return True


def _host_number(value):
    return type(value) is HostRef and any(name in value.type_names for name in
                                          ("decimal.Decimal", "fractions.Fraction", "builtins.int",
                                           "builtins.float"))


def check(value, field, rule=None):
    """Report a non-number, a non-finite number, or a break of ``rule``; return ``value`` as it is."""
    if value is None or _host_number(value):
        return value  # None is the hint's business; a number that stayed in the host is not read
    if not is_number(value):
        validate.note("mismatch", field, "expected a number (int, float or Decimal), got " + validate.describe(value))
        return value
    if not is_finite(value):
        validate.note("domain.warning", field, {"rule": "finite", "value": str(value)})
        return value
    broken = ((rule == "non_negative" and value < 0) or (rule == "positive" and value <= 0)
              or (rule == "probabilities" and not 0 <= value <= 1))
    if broken:
        validate.note("domain.warning", field, {"rule": rule, "value": str(value)})
    return value


def finite_in_range(value, field, low=None, high=None, error=EnforceError):
    """Refuse a result value that is not a finite number (Decimal included) within [low, high]."""
    if type(value) is HostRef:
        return value
    if not is_number(value):
        raise error(field + ": expected a number, got " + validate.describe(value), field=field)
    if not is_finite(value):
        raise error(field + ": must be a finite number, got " + str(value), field=field)
    if low is not None and value < low:
        raise error(field + ": " + str(value) + " is below " + repr(low), field=field)
    if high is not None and value > high:
        raise error(field + ": " + str(value) + " is above " + repr(high), field=field)
    return value


def finite_result(result, error=EnforceError):
    """Refuse a NaN or infinite float or Decimal result: it is never a decision."""
    if (type(result) is float or _is_decimal(result)) and not is_finite(result):
        raise error("result: must be a finite number, got " + str(result), field="result")
    return result
