"""Two-sample statistics for the ml_monitoring domain, stdlib only.

Why here: generated code records statistical evidence beside a drift function's own
verdict, and generated code runs in-process, in a RestrictedPython worker and in a
CPython-on-WASI guest, where neither numpy nor scipy exists. So the tests are written
out in plain Python:

- ``ks_2samp(a, b, method)``: the two-sided two-sample Kolmogorov-Smirnov statistic
  and p-value, as scipy's ``ks_2samp`` defines them. ``"exact"``: the probability that
  a random lattice path from (0, 0) to (n1, n2) leaves the band the observed statistic
  draws, counted point by point inside the band. ``"asymp"``: scipy's large-sample
  rule, the one-sample Kolmogorov distribution of D_m at m = round(n1 n2 / (n1 + n2))
  (``kolmogorov_sf``: Durbin's matrix method after Marsaglia, Tsang and Wang for small
  m d, the Pelz-Good expansion for the rest, twice the exact one-sided Smirnov tail
  where that is exact enough, as Simard and L'Ecuyer (2011) choose between them).
  ``"auto"`` is exact while n1 * n2 <= ``exact_max_cells`` (the path count costs
  O(n1 n2) in plain Python; scipy's own "auto" is exact up to 10 000 per sample).
- ``psi`` and ``kl_divergence``: population stability index and KL(current || reference)
  over the same equal-width bins of the two samples' joint range, empty bins smoothed.
- ``data_quality``: sizes, missing and non-finite rates, constant series, a score in [0, 1].
- ``push_window``: a rolling reference of the last few batches, for functions called
  on a stream of batches.

Every function takes plain numbers (missing values are dropped first by
``finite_values``) and returns plain data, so results cross any sandbox as JSON.
"""

import math
from operator import mul as _mul

__all__ = ["finite_values", "ks_2samp", "kolmogorov_sf", "smirnov_sf", "psi", "kl_divergence",
           "data_quality", "push_window", "window_reference", "two_sample_evidence"]

EXACT_MAX_CELLS = 10000
_BIG = 2.0 ** 128
_SMALL = 2.0 ** -128
_DURBIN_MAX_SIZE = 61  # beyond this matrix size the Pelz-Good expansion is as exact (z is small there) and far cheaper
_SMOOTH = 1e-4  # proportion given to an empty bin (PSI and KL are infinite otherwise)


def _is_number(value):
    kind = type(value)
    if kind is bool:
        return False
    if kind is int or kind is float:
        return True
    # Decimal, Fraction, NumPy scalars: anything float() takes that is not a container or text.
    return not isinstance(value, (str, bytes, list, tuple, dict, set)) and hasattr(value, "__float__")


def finite_values(sample):
    """The finite numbers of ``sample`` as floats (None, NaN, infinities and non-numbers left out)."""
    out = []
    append = out.append
    for value in sample:
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # not NaN, not infinite
                append(value)
        elif kind is int:
            append(float(value))
        elif _is_number(value):
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                continue
            if number - number == 0.0:
                append(number)
    return out


# --- the statistic ----------------------------------------------------------------------

def _statistic(a, b):
    """max |F_a(x) - F_b(x)| as an integer count: max |i * n2 - j * n1| over the merged order."""
    n1, n2 = len(a), len(b)
    i = j = 0
    best = 0
    while i < n1 and j < n2:
        value = a[i] if a[i] <= b[j] else b[j]
        while i < n1 and a[i] == value:  # ties move both ECDFs at once, as searchsorted(side="right")
            i += 1
        while j < n2 and b[j] == value:
            j += 1
        gap = abs(i * n2 - j * n1)
        if gap > best:
            best = gap
    return best  # past the end of one sample the gap only shrinks


def _exact_outside(n1, n2, bound):
    """P(a uniform random lattice path from (0,0) to (n1,n2) reaches |i*n2 - j*n1| >= bound).

    Probability mass is carried row by row over the points strictly inside the band;
    mass stepping onto a point outside it is absorbed and summed, so a small p-value
    keeps its relative precision. A step right from (i, j) has probability
    (n1 - i) / (n1 + n2 - i - j), a step up the rest.
    """
    if bound <= 0:
        return 1.0
    total = n1 + n2
    absorbed = 0.0

    def limits(i):  # the j of row i with |i*n2 - j*n1| < bound
        centre = i * n2
        return max((centre - bound) // n1 + 1, 0), min(-((-(centre + bound)) // n1) - 1, n2)

    previous, previous_lo = None, 0
    for i in range(n1 + 1):
        lo, hi = limits(i)
        row = [0.0] * (hi - lo + 1) if hi >= lo else []
        if previous is None:
            row[0 - lo] = 1.0  # (0, 0) is inside for any bound > 0
        else:
            for offset, mass in enumerate(previous):  # steps right, from row i - 1
                if mass == 0.0:
                    continue
                j = previous_lo + offset
                right = mass * (n1 - i + 1) / (total - (i - 1) - j)
                if lo <= j <= hi:
                    row[j - lo] += right
                else:
                    absorbed += right
        for offset in range(len(row)):  # steps up, within row i
            mass = row[offset]
            j = lo + offset
            if mass == 0.0 or j == n2:
                continue
            up = mass * (n2 - j) / (total - i - j)
            if j + 1 <= hi:
                row[offset + 1] += up
            else:
                absorbed += up
        if not row:
            break
        previous, previous_lo = row, lo
    return min(max(absorbed, 0.0), 1.0)


def ks_2samp(a, b, method="auto", exact_max_cells=EXACT_MAX_CELLS):
    """Two-sided two-sample KS test: ``{"statistic", "p_value", "method", "n1", "n2"}``.

    ``a`` and ``b`` are samples of numbers (missing values are dropped); ``method`` is
    "auto", "exact" or "asymp". Raises ValueError for an empty sample.
    """
    if method not in ("auto", "exact", "asymp"):
        raise ValueError("method must be 'auto', 'exact' or 'asymp'")
    return _ks(sorted(finite_values(a)), sorted(finite_values(b)), method, exact_max_cells)


def _ks(a, b, method, exact_max_cells):
    """ks_2samp on sorted finite samples."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("ks_2samp needs two non-empty samples of finite numbers")
    gap = _statistic(a, b)
    g = math.gcd(n1, n2)
    statistic = gap / (n1 * n2)
    if method == "auto":
        method = "exact" if n1 * n2 <= exact_max_cells else "asymp"
    if method == "exact":
        # scipy rounds the statistic to a multiple of 1/lcm(n1, n2): gap is one already (times g).
        p_value = _exact_outside(n1, n2, gap) if gap else 1.0
        statistic = (gap // g) / ((n1 // g) * n2)
    else:
        large, small = max(n1, n2), min(n1, n2)
        en = large * small / (large + small)
        p_value = kolmogorov_sf(statistic, round(en))
    return {"statistic": statistic, "p_value": p_value, "method": method, "n1": n1, "n2": n2}


# --- the one-sample Kolmogorov distribution ------------------------------------------------

def _log_factorial_over_power(n):
    """log(n! / n**n)."""
    return math.lgamma(n + 1) - n * math.log(n)


def smirnov_sf(n, d):
    """P(D_n+ >= d), the exact one-sided tail (Birnbaum and Tingey's sum, in logs)."""
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    last = int(math.floor(n * (1.0 - d)))
    log_n_fact = math.lgamma(n + 1)
    total = 0.0
    peak = 0.0
    for j in range(last + 1):
        low = 1.0 - d - j / n
        if low <= 0.0:
            continue  # only j = n(1 - d) exactly, whose term is 0
        term = math.exp(log_n_fact - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                        + (n - j) * math.log(low) + (j - 1) * math.log(d + j / n))
        total += term
        if term > peak:
            peak = term
        elif term < peak * 1e-18:  # the terms rise to one peak and fall: the rest add nothing
            break
    return min(max(d * total, 0.0), 1.0)


def _matmul(x, y):
    columns = list(zip(*y))
    return [[sum(map(_mul, row, column)) for column in columns] for row in x]


def _rescaled(rows, exponent):
    """Rows scaled down by 2**128 when they grow past it (the exponent keeps count)."""
    if max(abs(value) for row in rows for value in row) > _BIG:
        return [[value * _SMALL for value in row] for row in rows], exponent + 128
    return rows, exponent


def _durbin_cdf(n, d):
    """P(D_n < d) by Durbin's matrix (Marsaglia, Tsang and Wang's form), exact: n!/n**n (H**n)[k-1][k-1]."""
    nd = n * d
    k = int(math.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    # H[i][j] = 1/(i-j+1)! for i-j+1 >= 0; the first column and last row corrected at the band edges.
    inverse_factorial = [1.0]
    for index in range(1, m + 1):
        inverse_factorial.append(inverse_factorial[-1] / index)
    matrix = [[inverse_factorial[i - j + 1] if i - j + 1 >= 0 else 0.0 for j in range(m)] for i in range(m)]
    for i in range(m):
        matrix[i][0] -= h ** (i + 1) * inverse_factorial[i + 1]
        matrix[m - 1][i] -= h ** (m - i) * inverse_factorial[m - i]
    corner = 2 * h - 1.0
    matrix[m - 1][0] += (corner ** m if corner > 0 else 0.0) * inverse_factorial[m]
    if n * m * m <= 1.5 * math.log2(n) * m ** 3:
        # n products of a row vector with H: cheaper than squaring for small n
        columns = list(zip(*matrix))
        vector = [0.0] * m
        vector[k - 1] = 1.0
        exponent = 0
        for _ in range(n):
            vector = [sum(map(_mul, vector, column)) for column in columns]
            if max(map(abs, vector)) > _BIG:
                vector = [value * _SMALL for value in vector]
                exponent += 128
        entry = vector[k - 1]
    else:  # H**n by squaring, a binary exponent kept aside so nothing overflows
        power, power_exp = None, 0
        base, base_exp = matrix, 0
        remaining = n
        while remaining:
            if remaining & 1:
                if power is None:
                    power, power_exp = base, base_exp
                else:
                    power, power_exp = _rescaled(_matmul(power, base), power_exp + base_exp)
            remaining >>= 1
            if remaining:
                base, base_exp = _rescaled(_matmul(base, base), base_exp * 2)
        entry, exponent = power[k - 1][k - 1], power_exp
    if entry <= 0.0:
        return 0.0
    return math.exp(math.log(entry) + exponent * math.log(2.0) + _log_factorial_over_power(n))


def _pelz_good_cdf(n, x):
    """P(D_n <= x) by the Pelz-Good expansion K0 + K1/sqrt(n) + K2/n + K3/n**1.5 (small z = x sqrt(n))."""
    z = math.sqrt(n) * x
    z2 = z * z
    pi2 = math.pi ** 2
    log_q = -pi2 / (8.0 * z2)
    if log_q < -708.0:
        return 0.0
    q = math.exp(log_q)
    terms = [0.0, 0.0, 0.0, 0.0]
    count = int(math.ceil(16.0 * z / math.pi))
    for k in range(count, 0, -1):  # sums over odd m = 2k - 1 of c(m) q**(m*m), by Horner in q**(8k)
        odd = 2 * k - 1
        o2 = odd * odd
        o4 = o2 * o2
        o6 = o4 * o2
        coefficients = (
            1.0,
            -z2 + pi2 / 4.0 * o2,
            (6 * z2 ** 3 + 2 * z2 ** 2) + (2 * z2 ** 2 - 5 * z2) * pi2 / 4.0 * o2 + pi2 ** 2 * (1 - 2 * z2) / 16.0 * o4,
            (-30 * z2 ** 3 - 90 * z2 ** 4) + pi2 * (135 * z2 ** 2 - 96 * z2 ** 3) / 4.0 * o2
            + pi2 ** 2 * (-60 * z2 + 212 * z2 ** 2) / 16.0 * o4 + pi2 ** 3 * (5 - 30 * z2) / 64.0 * o6,
        )
        step = q ** (8 * k)
        terms = [term * step + c for term, c in zip(terms, coefficients)]
    root = math.sqrt(2.0 * math.pi)
    scale = (z, 6 * z2 ** 2, 72 * z ** 7, 6480 * z2 ** 5)
    terms = [term * q * root / s for term, s in zip(terms, scale)]
    # the sums over all k of k^2 q'^(k^2) (K2) and (3 k^2 z^2 pi^2 - pi^4 k^4) q'^(k^2) (K3)
    q_all = math.exp(-pi2 / (2.0 * z2))
    k2_sum = k3_sum = 0.0
    for k in range(count, 0, -1):
        weight = q_all ** (k * k)
        k2_sum += k * k * weight
        k3_sum += (3.0 * z2 - pi2 * k * k) * k * k * weight
    terms[2] += k2_sum * pi2 * root / (-36.0 * z2 * z)
    terms[3] += k3_sum * pi2 * root / (216.0 * z2 ** 3)
    return sum(term / n ** (index / 2.0) for index, term in enumerate(terms))


def kolmogorov_sf(d, n):
    """P(D_n >= d) for the two-sided one-sample Kolmogorov statistic of a sample of n."""
    n = int(n)
    if n <= 0:
        raise ValueError("n must be a whole number > 0")
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    if t <= 1.0:  # Ruben and Gambino: exact below 1/n
        if t <= 0.5:
            return 1.0
        cdf = math.exp(_log_factorial_over_power(n) + n * math.log(2 * t - 1))
        return min(max(1.0 - cdf, 0.0), 1.0)
    if t >= n - 1:
        return min(max(2.0 * (1.0 - d) ** n, 0.0), 1.0)
    if d >= 0.5:  # the two one-sided events cannot both happen
        return min(max(2.0 * smirnov_sf(n, d), 0.0), 1.0)
    squared = t * d
    if n <= 140:
        if squared <= 4.0:
            return min(max(1.0 - _durbin_cdf(n, d), 0.0), 1.0)
        return min(max(2.0 * smirnov_sf(n, d), 0.0), 1.0)  # the two-sided overlap is negligible here
    if squared >= 370.0:
        return 0.0
    if squared >= 2.2:
        return min(max(2.0 * smirnov_sf(n, d), 0.0), 1.0)
    if n <= 100000 and n * d ** 1.5 <= 1.4 and 2 * math.ceil(t) - 1 <= _DURBIN_MAX_SIZE:
        cdf = _durbin_cdf(n, d)
    else:
        cdf = _pelz_good_cdf(n, d)
    return min(max(1.0 - cdf, 0.0), 1.0)


# --- binned divergences ---------------------------------------------------------------------

def _proportions(current, reference, bins):
    """Shares of each sample in ``bins`` equal-width bins of the joint range, empty bins at _SMOOTH."""
    low = min(min(current), min(reference))
    high = max(max(current), max(reference))
    width = (high - low) / bins
    last = bins - 1

    def shares(sample):
        counts = [0] * bins
        if width > 0:
            for value in sample:
                index = int((value - low) / width)
                counts[index if index < last else last] += 1
        else:
            counts[0] = len(sample)
        size = len(sample)
        return [count / size if count else _SMOOTH for count in counts]
    return shares(current), shares(reference)


def _psi(p, q):
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q))


def _kl(p, q):
    total_p, total_q = sum(p), sum(q)  # smoothing made them a little over 1: renormalise
    return sum((a / total_p) * math.log((a / total_p) / (b / total_q)) for a, b in zip(p, q))


def psi(current, reference, bins=10):
    """Population stability index of ``current`` against ``reference`` (equal-width bins of the joint range)."""
    current, reference = finite_values(current), finite_values(reference)
    if not current or not reference:
        raise ValueError("psi needs two non-empty samples of finite numbers")
    return _psi(*_proportions(current, reference, int(bins)))


def kl_divergence(current, reference, bins=10):
    """KL(current || reference) in nats over the same bins as ``psi``."""
    current, reference = finite_values(current), finite_values(reference)
    if not current or not reference:
        raise ValueError("kl_divergence needs two non-empty samples of finite numbers")
    return _kl(*_proportions(current, reference, int(bins)))


# --- data quality -------------------------------------------------------------------------

def data_quality(samples):
    """A report on named samples: ``{"score", "samples": {name: {...}}}``.

    Per sample: ``n``, ``missing`` (None or NaN), ``non_finite`` (infinities),
    ``non_numeric``, the rates of the first two, ``constant`` (at least two values, all
    equal) and a ``score``: the share of usable (finite) values, halved for a constant
    series, 0 with fewer than two usable values. The overall score is the worst sample's.
    """
    report = {}
    overall = 1.0
    for name, sample in samples.items():
        try:
            values = list(sample)
        except TypeError:
            values = []
        n = len(values)
        missing = non_finite = non_numeric = 0
        finite = []
        append = finite.append
        for value in values:
            if type(value) is float:  # the common case first
                if value - value == 0.0:
                    append(value)
                elif value != value:
                    missing += 1
                else:
                    non_finite += 1
            elif value is None:
                missing += 1
            elif not _is_number(value):
                non_numeric += 1
            else:
                try:
                    number = float(value)
                except (TypeError, ValueError, OverflowError):
                    non_numeric += 1
                    continue
                if number != number:
                    missing += 1
                elif number - number != 0.0:
                    non_finite += 1
                else:
                    append(number)
        constant = len(finite) >= 2 and min(finite) == max(finite)
        score = len(finite) / n if n and len(finite) >= 2 else 0.0
        if constant:
            score = score / 2
        report[name] = {
            "n": n, "missing": missing, "non_finite": non_finite, "non_numeric": non_numeric,
            "missing_rate": round(missing / n, 6) if n else 0.0,
            "non_finite_rate": round(non_finite / n, 6) if n else 0.0,
            "constant": constant, "score": round(score, 6),
        }
        overall = min(overall, score)
    return {"score": round(overall, 6), "samples": report}


# --- a rolling reference over a stream of batches -------------------------------------------

def push_window(window, batch, size):
    """Add ``batch``'s finite values to ``window`` (a list of batches), keeping the last ``size``."""
    window.append(finite_values(batch))
    size = max(int(size), 1)
    while len(window) > size:
        window.pop(0)


def window_reference(window):
    """The rolling reference: the batches in ``window`` as one sample."""
    out = []
    for batch in window:
        out.extend(batch)
    return out


def two_sample_evidence(current, reference, bins=10, exact_max_cells=EXACT_MAX_CELLS):
    """KS (statistic, p-value, method), PSI and KL of ``current`` against ``reference``; None if either is empty."""
    current, reference = finite_values(current), finite_values(reference)
    if not current or not reference:
        return None
    current.sort()
    reference.sort()
    test = _ks(current, reference, "auto", exact_max_cells)
    p, q = _proportions(current, reference, int(bins))
    return {
        "ks_statistic": round(test["statistic"], 12), "p_value": test["p_value"], "method": test["method"],
        "n_current": test["n1"], "n_reference": test["n2"],
        "psi": round(_psi(p, q), 12), "kl_divergence": round(_kl(p, q), 12),
    }


# --- the function's verdict against the test -----------------------------------------------

def verdict_of(result, keys=("drift_detected", "drift", "is_drift", "alert")):
    """The drift verdict a result states: a bool, or a mapping's bool under one of ``keys``; else None."""
    if type(result) is bool:
        return result
    if isinstance(result, dict):
        for key in keys:
            if type(result.get(key)) is bool:
                return result[key]
    return None


def advisory(verdict, test, limits):
    """What to tell when the verdict and the KS test disagree, or None.

    Drift claimed while p > ``no_drift_p``; no drift claimed while p < ``drift_p`` and
    the KS statistic is at least ``large_effect``. The function's answer is unchanged:
    this is advice to whoever reads the events.
    """
    if verdict is None or not test:
        return None
    p_value, statistic = test["p_value"], test["ks_statistic"]
    if verdict and p_value > limits["no_drift_p"]:
        return {"says": "drift", "test": "no evidence of drift", "p_value": p_value, "ks_statistic": statistic,
                "limit": limits["no_drift_p"]}
    if not verdict and p_value < limits["drift_p"] and statistic >= limits["large_effect"]:
        return {"says": "no drift", "test": "drift with a large effect", "p_value": p_value,
                "ks_statistic": statistic, "limit": limits["drift_p"], "large_effect": limits["large_effect"]}
    return None
