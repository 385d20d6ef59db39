"""Worked science and maths problems built from templates, with every number actually computed.

Each template draws its inputs from a seeded `random.Random`, computes the answer in Python
and writes the problem and a step-by-step solution. The `science-docs` source uses them as
prose documents and the `chat` source as question/answer pairs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

G = 9.81  # m/s^2
R_GAS = 8.314  # J/(mol K)
T_975 = {4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201}


@dataclass
class Worked:
    """One worked problem: a short title, the problem statement and its solution."""

    title: str
    problem: str
    solution: str

    def as_text(self) -> str:
        return f"{self.title}\n\n{self.problem}\n\n{self.solution}\n"


def num(x: float, digits: int = 3) -> str:
    """`x` rounded to `digits` decimals, without trailing zeros (and without "-0")."""
    s = f"{x:.{digits}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def sig(x: float, figures: int = 4) -> str:
    """`x` to `figures` significant figures, in plain notation unless very large or small."""
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1e7:
        decimals = max(0, figures - 1 - int(math.floor(math.log10(abs(x)))))
        return num(x, decimals)
    return f"{x:.{figures - 1}e}"


def _poly_str(coeffs: list[int], var: str = "x") -> str:
    """Polynomial text from coefficients, highest degree first: [3, 0, -2] -> '3x^2 - 2'."""
    terms = []
    deg = len(coeffs) - 1
    for i, c in enumerate(coeffs):
        p = deg - i
        if c == 0:
            continue
        mag = abs(c)
        coef = "" if mag == 1 and p > 0 else str(mag)
        gap = " " if coef and p >= 1 and len(var) > 1 else ""
        body = coef + gap + (var if p >= 1 else "") + (f"^{p}" if p > 1 else "")
        sign = "-" if c < 0 else "+"
        terms.append((sign, body))
    if not terms:
        return "0"
    first_sign, first = terms[0]
    out = ("-" if first_sign == "-" else "") + first
    for sign, body in terms[1:]:
        out += f" {sign} {body}"
    return out


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def projectile(rng: random.Random) -> Worked:
    v0 = round(rng.uniform(5, 60), 1)
    theta = rng.choice((15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75))
    rad = math.radians(theta)
    vx, vy = v0 * math.cos(rad), v0 * math.sin(rad)
    t = 2 * vy / G
    h = vy**2 / (2 * G)
    r = v0**2 * math.sin(2 * rad) / G
    return Worked(
        "Projectile motion on level ground",
        f"A ball is launched at {v0} m/s at an angle of {theta} degrees above the horizontal. Ignoring air "
        f"resistance and taking g = {G} m/s^2, find the time of flight, the maximum height and the range.",
        f"Split the launch velocity into components: v_x = v0 cos(theta) = {v0} * cos({theta} deg) = {num(vx)} m/s "
        f"and v_y = v0 sin(theta) = {num(vy)} m/s.\n"
        f"The vertical motion is y(t) = v_y t - g t^2 / 2, which returns to zero at t = 2 v_y / g = "
        f"2 * {num(vy)} / {G} = {num(t)} s.\n"
        f"The height peaks when the vertical speed vanishes, at t = v_y / g, giving H = v_y^2 / (2 g) = "
        f"{num(vy)}^2 / {num(2 * G, 2)} = {num(h)} m.\n"
        f"The horizontal speed is constant, so the range is R = v_x * t = {num(vx)} * {num(t)} = {num(r)} m, "
        f"which matches the closed form R = v0^2 sin(2 theta) / g = {num(r)} m.\n"
        f"Check: for this speed the longest range, at 45 degrees, would be {num(v0**2 / G)} m.",
    )


def quadratic(rng: random.Random) -> Worked:
    a = rng.choice([1, 1, 1, 2, 3, -1, -2, 4, 5])
    b = rng.randrange(-12, 13)
    c = rng.randrange(-20, 21)
    disc = b * b - 4 * a * c
    eq = f"{_poly_str([a, b, c])} = 0"
    steps = [f"For a x^2 + b x + c = 0 we have a = {a}, b = {b}, c = {c}.",
             f"The discriminant is D = b^2 - 4ac = {b * b} - ({4 * a * c}) = {disc}."]
    if disc > 0:
        root = math.sqrt(disc)
        x1, x2 = (-b + root) / (2 * a), (-b - root) / (2 * a)
        exact = math.isqrt(disc) ** 2 == disc
        steps.append(f"D > 0, so there are two real roots x = (-b +/- sqrt(D)) / (2a) = "
                     f"({-b} +/- {num(root, 4)}) / {2 * a}.")
        if exact:
            r1, r2 = Fraction(-b + math.isqrt(disc), 2 * a), Fraction(-b - math.isqrt(disc), 2 * a)
            steps.append(f"D is a perfect square, so the roots are rational: x1 = {_frac(r1)} and x2 = {_frac(r2)}.")
        else:
            steps.append(f"Numerically x1 = {num(x1, 4)} and x2 = {num(x2, 4)}.")
        steps.append(f"Check with Vieta's formulas: x1 + x2 = {num(x1 + x2, 4)} = -b/a = {num(-b / a, 4)}, "
                     f"and x1 * x2 = {num(x1 * x2, 4)} = c/a = {num(c / a, 4)}.")
    elif disc == 0:
        steps.append(f"D = 0, so there is one double root x = -b / (2a) = {_frac(Fraction(-b, 2 * a))}.")
    else:
        re, im = -b / (2 * a), math.sqrt(-disc) / (2 * abs(a))
        steps.append(f"D < 0, so there are no real roots; the complex pair is x = {num(re, 4)} +/- {num(im, 4)} i.")
    vx = Fraction(-b, 2 * a)
    vy = a * vx * vx + b * vx + c
    steps.append(f"The parabola's vertex is at x = -b/(2a) = {_frac(vx)}, where y = {_frac(vy)}; it opens "
                 f"{'upward' if a > 0 else 'downward'} because a {'>' if a > 0 else '<'} 0.")
    return Worked("Solving a quadratic equation", f"Solve {eq}.", "\n".join(steps))


def polynomial_calculus(rng: random.Random) -> Worked:
    deg = rng.randrange(2, 5)
    coeffs = [rng.randrange(-6, 7) for _ in range(deg + 1)]
    if coeffs[0] == 0:
        coeffs[0] = rng.choice((1, 2, -1, 3))
    x0 = rng.randrange(-3, 4)
    lo, hi = sorted(rng.sample(range(-3, 5), 2))
    deriv = [c * (deg - i) for i, c in enumerate(coeffs[:-1])]
    anti = [Fraction(c, deg - i + 1) for i, c in enumerate(coeffs)] + [Fraction(0)]

    def ev(cs, x) -> Fraction:
        total = Fraction(0)
        for c in cs:
            total = total * x + c
        return total

    f_x0 = ev(coeffs, x0)
    slope = ev(deriv, x0)
    integral = ev(anti, hi) - ev(anti, lo)
    anti_text = " + ".join(
        f"({_frac(c)})x^{deg - i + 1}" for i, c in enumerate(anti[:-1]) if c != 0
    ) or "0"
    return Worked(
        "Derivative and definite integral of a polynomial",
        f"Let f(x) = {_poly_str(coeffs)}. Find f'(x), the tangent line at x = {x0}, and the integral of f from {lo} to {hi}.",
        f"Differentiate term by term with d/dx x^n = n x^(n-1): f'(x) = {_poly_str(deriv)}.\n"
        f"At x = {x0}: f({x0}) = {_frac(f_x0)} and f'({x0}) = {_frac(slope)}, so the tangent line is "
        f"y = {_frac(slope)} (x - {x0}) + {_frac(f_x0)}.\n"
        f"An antiderivative is F(x) = {anti_text}.\n"
        f"By the fundamental theorem of calculus the integral is F({hi}) - F({lo}) = {_frac(ev(anti, hi))} - "
        f"({_frac(ev(anti, lo))}) = {_frac(integral)}, about {num(float(integral), 4)}.",
    )


SAMPLE_CONTEXTS = (
    ("the boiling point of a solvent", "degrees C", 76.0, 1.2),
    ("the mass of a standard weight", "g", 100.0, 0.05),
    ("the period of a pendulum", "s", 2.01, 0.03),
    ("the reaction time of a volunteer", "ms", 245.0, 20.0),
    ("the resistance of a batch of resistors", "ohm", 220.0, 3.0),
    ("the pH of a buffer solution", "pH units", 7.2, 0.05),
    ("the length of leaves from one tree", "cm", 8.4, 0.9),
)


def sample_statistics(rng: random.Random) -> Worked:
    what, unit, centre, spread = rng.choice(SAMPLE_CONTEXTS)
    n = rng.randrange(5, 13)
    decimals = 2 if spread < 1 else 1
    xs = [round(rng.gauss(centre, spread), decimals) for _ in range(n)]
    mean = sum(xs) / n
    s = sorted(xs)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    ss = sum((x - mean) ** 2 for x in xs)
    var = ss / (n - 1)
    sd = math.sqrt(var)
    se = sd / math.sqrt(n)
    t = T_975[n - 1]
    data = ", ".join(f"{x:.{decimals}f}" for x in xs)
    return Worked(
        "Summary statistics and a confidence interval",
        f"A student measures {what} {n} times and gets ({unit}): {data}. Estimate the true value with a 95% "
        "confidence interval.",
        f"The sum of the readings is {num(sum(xs), 4)}, so the mean is {num(sum(xs), 4)} / {n} = {num(mean, 4)} {unit}.\n"
        f"Sorted, the readings are {', '.join(f'{x:.{decimals}f}' for x in s)}; the median is {num(median, 4)}.\n"
        f"The sum of squared deviations from the mean is {num(ss, 5)}; dividing by n - 1 = {n - 1} gives the sample "
        f"variance {num(var, 5)} and the standard deviation s = {num(sd, 4)} {unit}.\n"
        f"The standard error of the mean is s / sqrt(n) = {num(sd, 4)} / {num(math.sqrt(n), 4)} = {num(se, 4)}.\n"
        f"With {n - 1} degrees of freedom the two-sided 95% t value is {t}, so the interval is "
        f"{num(mean, 4)} +/- {t} * {num(se, 4)} = [{num(mean - t * se, 4)}, {num(mean + t * se, 4)}] {unit}.",
    )


def ideal_gas(rng: random.Random) -> Worked:
    n = rng.choice((0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.25))
    t_c = rng.randrange(-20, 201)
    v_l = rng.choice((5.0, 10.0, 12.5, 20.0, 22.4, 25.0, 50.0))
    t_k = t_c + 273.15
    p = n * R_GAS * t_k / (v_l / 1000)
    t2 = t_k * 2
    return Worked(
        "Ideal gas law",
        f"{num(n)} mol of an ideal gas fill a rigid {num(v_l)} L container at {t_c} degrees C. What is the pressure? "
        "What happens to it if the absolute temperature doubles?",
        f"Convert to SI units: T = {t_c} + 273.15 = {num(t_k, 2)} K and V = {num(v_l)} L = {num(v_l / 1000, 4)} m^3.\n"
        f"From P V = n R T, P = n R T / V = {num(n)} * {R_GAS} * {num(t_k, 2)} / {num(v_l / 1000, 4)} = {sig(p, 4)} Pa, "
        f"which is {num(p / 1000, 2)} kPa or {num(p / 101325, 3)} atm.\n"
        f"At constant volume P is proportional to T, so at {num(t2, 2)} K the pressure doubles to {sig(2 * p, 4)} Pa. "
        f"Note that doubling the Celsius temperature would not double the pressure.",
    )


ISOTOPES = (("carbon-14", 5730.0, "years"), ("iodine-131", 8.02, "days"), ("cobalt-60", 5.27, "years"),
            ("radon-222", 3.82, "days"), ("phosphorus-32", 14.3, "days"), ("caesium-137", 30.2, "years"))


def radioactive_decay(rng: random.Random) -> Worked:
    name, half, unit = rng.choice(ISOTOPES)
    n0 = rng.choice((100, 250, 500, 800, 1000, 2000))
    t = round(half * rng.uniform(0.3, 4.0), 1)
    lam = math.log(2) / half
    remaining = n0 * 2 ** (-t / half)
    frac = rng.choice((0.1, 0.05, 0.01, 0.25))
    t_frac = math.log(1 / frac) / lam
    return Worked(
        f"Radioactive decay of {name}",
        f"A sample holds {n0} mg of {name} (half-life {half} {unit}). How much is left after {t} {unit}, and when "
        f"does only {num(frac * 100)}% remain?",
        f"The decay constant is lambda = ln 2 / T_half = 0.6931 / {half} = {sig(lam, 4)} per {unit[:-1]}.\n"
        f"N(t) = N0 * 2^(-t / T_half) = {n0} * 2^(-{t} / {half}) = {n0} * 2^(-{num(t / half, 4)}) = {num(remaining, 2)} mg.\n"
        f"Equivalently N0 e^(-lambda t) = {n0} * e^(-{num(lam * t, 4)}) = {num(n0 * math.exp(-lam * t), 2)} mg.\n"
        f"Solving N/N0 = {frac} gives t = ln(1/{frac}) / lambda = {num(math.log(1 / frac), 4)} / {sig(lam, 4)} = "
        f"{sig(t_frac, 4)} {unit}, that is {num(t_frac / half, 3)} half-lives.",
    )


def spring_oscillator(rng: random.Random) -> Worked:
    k = rng.randrange(5, 500)
    m = round(rng.uniform(0.05, 3.0), 2)
    a = rng.choice((0.02, 0.05, 0.08, 0.1, 0.15))
    w = math.sqrt(k / m)
    return Worked(
        "Simple harmonic oscillator",
        f"A {num(m)} kg mass on a spring of stiffness {k} N/m oscillates with amplitude {num(a * 100)} cm. Find the "
        "angular frequency, the period, the maximum speed and acceleration, and the total energy.",
        f"Newton's second law gives m x'' = -k x, whose solutions oscillate at omega = sqrt(k/m) = sqrt({k} / {num(m)}) = "
        f"{num(w, 4)} rad/s.\n"
        f"The frequency is f = omega / (2 pi) = {num(w / (2 * math.pi), 4)} Hz and the period T = 1/f = "
        f"{num(2 * math.pi / w, 4)} s.\n"
        f"With x(t) = A cos(omega t), the speed peaks at A omega = {num(a, 3)} * {num(w, 4)} = {num(a * w, 4)} m/s and the "
        f"acceleration at A omega^2 = {num(a * w * w, 4)} m/s^2.\n"
        f"The energy is E = k A^2 / 2 = {k} * {num(a, 3)}^2 / 2 = {sig(k * a * a / 2, 4)} J, the same as "
        f"m v_max^2 / 2 = {sig(m * (a * w) ** 2 / 2, 4)} J.",
    )


def pendulum(rng: random.Random) -> Worked:
    length = round(rng.uniform(0.2, 5.0), 2)
    t_earth = 2 * math.pi * math.sqrt(length / G)
    t_moon = 2 * math.pi * math.sqrt(length / 1.62)
    seconds_len = G / math.pi**2
    return Worked(
        "Period of a simple pendulum",
        f"Find the small-angle period of a {num(length)} m pendulum on Earth (g = {G} m/s^2) and on the Moon "
        "(g = 1.62 m/s^2).",
        f"For small swings sin(theta) is close to theta, and the equation of motion becomes theta'' = -(g/L) theta, "
        f"so T = 2 pi sqrt(L / g).\n"
        f"On Earth: T = 2 pi sqrt({num(length)} / {G}) = {num(t_earth, 4)} s.\n"
        f"On the Moon: T = 2 pi sqrt({num(length)} / 1.62) = {num(t_moon, 4)} s, longer by a factor of "
        f"sqrt({G} / 1.62) = {num(t_moon / t_earth, 4)}.\n"
        f"A pendulum with a 2 s period on Earth (a 'seconds pendulum') would need L = g / pi^2 = {num(seconds_len, 4)} m.",
    )


def linear_regression(rng: random.Random) -> Worked:
    n = rng.randrange(5, 9)
    a, b = round(rng.uniform(-5, 10), 1), round(rng.uniform(-3, 4), 2)
    xs = list(range(1, n + 1))
    ys = [round(a + b * x + rng.gauss(0, 0.8), 2) for x in xs]
    sx, sy = sum(xs), sum(ys)
    sxx = sum(x * x for x in xs)
    sxy = sum(x * y for x, y in zip(xs, ys))
    syy = sum(y * y for y in ys)
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    icept = (sy - slope * sx) / n
    r = (n * sxy - sx * sy) / math.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))
    pts = ", ".join(f"({x}, {y:.2f})" for x, y in zip(xs, ys))
    return Worked(
        "Least-squares line",
        f"Fit a straight line y = a + b x to the points {pts}, and report the correlation coefficient.",
        f"The sums are n = {n}, sum x = {sx}, sum y = {num(sy, 2)}, sum x^2 = {sxx}, sum xy = {num(sxy, 3)} and "
        f"sum y^2 = {num(syy, 4)}.\n"
        f"The slope is b = (n sum xy - sum x sum y) / (n sum x^2 - (sum x)^2) = ({num(n * sxy, 3)} - {num(sx * sy, 3)}) / "
        f"({n * sxx} - {sx * sx}) = {num(slope, 4)}.\n"
        f"The intercept is a = (sum y - b sum x) / n = {num(icept, 4)}, so the fitted line is "
        f"y = {num(icept, 4)} + {num(slope, 4)} x.\n"
        f"The correlation coefficient is r = {num(r, 4)} (r^2 = {num(r * r, 4)}), so the line explains "
        f"{num(100 * r * r, 1)}% of the variance of y.",
    )


def matrix_2x2(rng: random.Random) -> Worked:
    a, b, c, d = (rng.randrange(-6, 7) for _ in range(4))
    det = a * d - b * c
    tr = a + d
    disc = tr * tr - 4 * det
    lines = [f"The determinant is ad - bc = ({a})*({d}) - ({b})*({c}) = {det} and the trace is a + d = {tr}."]
    if det != 0:
        inv = [[Fraction(d, det), Fraction(-b, det)], [Fraction(-c, det), Fraction(a, det)]]
        lines.append(f"Since det != 0 the matrix is invertible: A^-1 = (1/{det}) [[{d}, {-b}], [{-c}, {a}]] = "
                     f"[[{_frac(inv[0][0])}, {_frac(inv[0][1])}], [{_frac(inv[1][0])}, {_frac(inv[1][1])}]].")
    else:
        lines.append("Since det = 0 the matrix is singular: its columns are linearly dependent and it has no inverse.")
    lines.append(f"The eigenvalues solve {_poly_str([1, -tr, det], 'lambda')} = 0; "
                 f"the discriminant is tr^2 - 4 det = {disc}.")
    if disc >= 0:
        l1, l2 = (tr + math.sqrt(disc)) / 2, (tr - math.sqrt(disc)) / 2
        lines.append(f"So lambda1 = {num(l1, 4)} and lambda2 = {num(l2, 4)}; their sum {num(l1 + l2, 4)} is the trace "
                     f"and their product {num(l1 * l2, 4)} the determinant.")
    else:
        lines.append(f"The eigenvalues are complex: lambda = {num(tr / 2, 4)} +/- {num(math.sqrt(-disc) / 2, 4)} i, "
                     "so the map rotates as well as scales vectors.")
    return Worked("Determinant, inverse and eigenvalues of a 2x2 matrix",
                  f"Let A = [[{a}, {b}], [{c}, {d}]]. Compute det A, A^-1 if it exists, and the eigenvalues.",
                  "\n".join(lines))


def binomial(rng: random.Random) -> Worked:
    n = rng.randrange(5, 21)
    p = rng.choice((0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9))
    k = rng.randrange(0, n + 1)
    what = rng.choice(("a free throw goes in", "a seed germinates", "a part passes inspection",
                       "a coin lands heads", "a patient responds to treatment"))
    pk = math.comb(n, k) * p**k * (1 - p) ** (n - k)
    cdf = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
    return Worked(
        "Binomial probabilities",
        f"Each time, {what} with probability {p}, independently. In {n} tries, what is the probability of exactly "
        f"{k} successes, and of at most {k}? What are the mean and standard deviation of the count?",
        f"The count X is Binomial(n = {n}, p = {p}).\n"
        f"P(X = {k}) = C({n}, {k}) p^{k} (1-p)^{n - k} = {math.comb(n, k)} * {p}^{k} * {num(1 - p, 2)}^{n - k} = "
        f"{sig(pk, 4)}.\n"
        f"P(X <= {k}) is the sum of P(X = i) for i = 0..{k}, which is {sig(cdf, 6)}.\n"
        f"The mean is n p = {num(n * p, 3)} and the variance n p (1-p) = {num(n * p * (1 - p), 4)}, so the standard "
        f"deviation is {num(math.sqrt(n * p * (1 - p)), 4)}.",
    )


def newton_sqrt(rng: random.Random) -> Worked:
    s = rng.randrange(2, 2000)
    while math.isqrt(s) ** 2 == s:
        s += 1
    x = float(rng.choice((1, s // 2 or 1, s)))
    lines = [f"Newton's method on f(x) = x^2 - {s} gives x_(n+1) = x_n - f(x_n)/f'(x_n) = (x_n + {s}/x_n) / 2.",
             f"Start from x_0 = {num(x)}."]
    for i in range(1, 7):
        x = (x + s / x) / 2
        lines.append(f"x_{i} = {x:.10f}   (error {abs(x - math.sqrt(s)):.2e})")
    lines.append(f"The true value is sqrt({s}) = {math.sqrt(s):.10f}; near the root the number of correct digits "
                 "roughly doubles each step (quadratic convergence).")
    return Worked("Square roots by Newton's method", f"Approximate sqrt({s}) with Newton's method.", "\n".join(lines))


def elastic_collision(rng: random.Random) -> Worked:
    m1, m2 = round(rng.uniform(0.2, 8.0), 1), round(rng.uniform(0.2, 12.0), 1)
    u1, u2 = rng.randrange(1, 11), rng.randrange(-6, 4)
    v1 = ((m1 - m2) * u1 + 2 * m2 * u2) / (m1 + m2)
    v2 = ((m2 - m1) * u2 + 2 * m1 * u1) / (m1 + m2)
    p_before, p_after = m1 * u1 + m2 * u2, m1 * v1 + m2 * v2
    ke_before, ke_after = 0.5 * m1 * u1**2 + 0.5 * m2 * u2**2, 0.5 * m1 * v1**2 + 0.5 * m2 * v2**2
    return Worked(
        "A one-dimensional elastic collision",
        f"A {num(m1)} kg cart moving at {u1} m/s hits a {num(m2)} kg cart moving at {u2} m/s on the same line. The "
        "collision is perfectly elastic. Find both velocities afterwards.",
        "Conservation of momentum and of kinetic energy give\n"
        f"v1 = ((m1 - m2) u1 + 2 m2 u2) / (m1 + m2) = {num(v1, 4)} m/s and\n"
        f"v2 = ((m2 - m1) u2 + 2 m1 u1) / (m1 + m2) = {num(v2, 4)} m/s.\n"
        f"Check momentum: before {num(p_before, 4)} kg m/s, after {num(p_after, 4)} kg m/s.\n"
        f"Check kinetic energy: before {num(ke_before, 4)} J, after {num(ke_after, 4)} J.\n"
        f"The relative speed is reversed: u1 - u2 = {u1 - u2} and v2 - v1 = {num(v2 - v1, 4)}.",
    )


def taylor_series(rng: random.Random) -> Worked:
    fn = rng.choice(("exp", "sin", "cos"))
    x = round(rng.uniform(0.05, 2.5), 2)
    terms = rng.randrange(3, 7)
    if fn == "exp":
        parts = [x**k / math.factorial(k) for k in range(terms)]
        series, exact = "1 + x + x^2/2! + x^3/3! + ...", math.exp(x)
    elif fn == "sin":
        parts = [(-1) ** k * x ** (2 * k + 1) / math.factorial(2 * k + 1) for k in range(terms)]
        series, exact = "x - x^3/3! + x^5/5! - ...", math.sin(x)
    else:
        parts = [(-1) ** k * x ** (2 * k) / math.factorial(2 * k) for k in range(terms)]
        series, exact = "1 - x^2/2! + x^4/4! - ...", math.cos(x)
    approx = 0.0
    lines = [f"The Maclaurin series is {fn}(x) = {series}. At x = {x}, add the first {terms} terms:"]
    for i, part in enumerate(parts):
        approx += part
        lines.append(f"  term {i + 1}: {part:+.8f}, partial sum {approx:.8f}")
    lines.append(f"The exact value is {fn}({x}) = {exact:.8f}, so the error after {terms} terms is "
                 f"{abs(exact - approx):.2e}.")
    return Worked(f"Taylor approximation of {fn}", f"Approximate {fn}({x}) with {terms} terms of its Taylor series.",
                  "\n".join(lines))


def euclid(rng: random.Random) -> Worked:
    a, b = rng.randrange(30, 5000), rng.randrange(12, 3000)
    if a < b:
        a, b = b, a
    lines = []
    x, y = a, b
    while y:
        q, r = divmod(x, y)
        lines.append(f"{x} = {q} * {y} + {r}")
        x, y = y, r
    g = x
    old_r, r, old_s, s, old_t, t = a, b, 1, 0, 0, 1
    while r:
        q = old_r // r
        old_r, r = r, old_r - q * r
        old_s, s = s, old_s - q * s
        old_t, t = t, old_t - q * t
    return Worked(
        "Greatest common divisor by Euclid's algorithm",
        f"Find gcd({a}, {b}), the least common multiple, and integers u, v with {a} u + {b} v = gcd.",
        "Divide repeatedly, replacing the pair by (divisor, remainder):\n" + "\n".join(lines)
        + f"\nThe last non-zero remainder is the gcd: gcd({a}, {b}) = {g}.\n"
        f"Then lcm = {a} * {b} / {g} = {a * b // g}.\n"
        f"Running the steps backwards (the extended algorithm) gives u = {old_s}, v = {old_t}: "
        f"{a} * {old_s} + {b} * {old_t} = {a * old_s + b * old_t}.",
    )


HEAT = (("water", 4186), ("aluminium", 897), ("copper", 385), ("iron", 449), ("glass", 840), ("olive oil", 1970))


def heating(rng: random.Random) -> Worked:
    name, c = rng.choice(HEAT)
    m = rng.choice((0.2, 0.5, 1.0, 1.5, 2.0, 5.0))
    t1, t2 = rng.randrange(5, 30), rng.randrange(40, 100)
    power = rng.choice((500, 800, 1000, 1500, 2000))
    q = m * c * (t2 - t1)
    return Worked(
        "Heat needed to warm a substance",
        f"How much energy heats {num(m)} kg of {name} (specific heat {c} J/(kg K)) from {t1} to {t2} degrees C, and how "
        f"long does a {power} W heater take if no heat is lost?",
        f"Q = m c dT = {num(m)} * {c} * ({t2} - {t1}) = {num(m)} * {c} * {t2 - t1} = {sig(q, 5)} J = {num(q / 1000, 3)} kJ.\n"
        f"At {power} W the time is t = Q / P = {sig(q, 5)} / {power} = {num(q / power, 1)} s, or "
        f"{num(q / power / 60, 2)} minutes.",
    )


def resistors(rng: random.Random) -> Worked:
    rs = [rng.choice((10, 22, 33, 47, 68, 100, 150, 220, 330, 470, 1000)) for _ in range(rng.randrange(2, 5))]
    v = rng.choice((1.5, 3.0, 5.0, 9.0, 12.0, 24.0))
    series = sum(rs)
    par = 1 / sum(1 / r for r in rs)
    names = ", ".join(f"{r} ohm" for r in rs)
    return Worked(
        "Resistors in series and in parallel",
        f"Resistors of {names} are connected to a {num(v)} V supply, first all in series, then all in parallel. "
        "Find the equivalent resistance, the current and the power in each case.",
        f"In series the resistances add: R = {' + '.join(map(str, rs))} = {series} ohm. The current is "
        f"I = V/R = {num(v)} / {series} = {sig(v / series, 4)} A and the power P = V I = {sig(v * v / series, 4)} W.\n"
        f"In parallel the conductances add: 1/R = {' + '.join(f'1/{r}' for r in rs)} = {sig(1 / par, 4)} S, so "
        f"R = {num(par, 3)} ohm. The current is {sig(v / par, 4)} A and the power {sig(v * v / par, 4)} W.\n"
        f"The parallel value is below the smallest resistor ({min(rs)} ohm), as it must be.",
    )


def compound_growth(rng: random.Random) -> Worked:
    p = rng.choice((500, 1000, 2500, 5000, 10000))
    r = rng.choice((0.015, 0.02, 0.03, 0.035, 0.045, 0.05, 0.07))
    years = rng.randrange(2, 31)
    n = rng.choice((1, 4, 12, 365))
    amount = p * (1 + r / n) ** (n * years)
    cont = p * math.exp(r * years)
    double = math.log(2) / math.log(1 + r)
    return Worked(
        "Compound growth",
        f"{p} units are invested at {num(r * 100, 2)}% a year, compounded {n} times a year, for {years} years. What is "
        "the final amount, how does it compare with continuous compounding, and how long does doubling take?",
        f"A = P (1 + r/n)^(n t) = {p} * (1 + {r}/{n})^({n * years}) = {num(amount, 2)}.\n"
        f"With continuous compounding A = P e^(r t) = {p} * e^{num(r * years, 4)} = {num(cont, 2)}, "
        f"{num(cont - amount, 2)} more.\n"
        f"Compounded yearly, doubling takes ln 2 / ln(1 + r) = {num(double, 2)} years; the rule of 72 estimates "
        f"72 / {num(r * 100, 2)} = {num(72 / (r * 100), 2)} years.",
    )


def prime_factors(rng: random.Random) -> Worked:
    n = rng.randrange(60, 100000)
    m, fac, d = n, {}, 2
    while d * d <= m:
        while m % d == 0:
            fac[d] = fac.get(d, 0) + 1
            m //= d
        d += 1
    if m > 1:
        fac[m] = fac.get(m, 0) + 1
    ndiv = math.prod(e + 1 for e in fac.values())
    sdiv = math.prod((p ** (e + 1) - 1) // (p - 1) for p, e in fac.items())
    phi = math.prod(p ** (e - 1) * (p - 1) for p, e in fac.items())
    text = " * ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in sorted(fac.items()))
    return Worked(
        "Prime factorisation and divisor functions",
        f"Factor {n} into primes and find its number of divisors, the sum of its divisors and Euler's phi.",
        f"Trial division by primes up to sqrt({n}) = {num(math.sqrt(n), 2)} gives {n} = {text}.\n"
        f"The number of divisors is the product of (exponent + 1): {ndiv}.\n"
        f"The sum of divisors is the product of (p^(e+1) - 1)/(p - 1): {sdiv}"
        + (f", so {n} is {'abundant' if sdiv - n > n else 'deficient' if sdiv - n < n else 'perfect'}" + ".\n")
        + f"Euler's phi is the product of p^(e-1) (p - 1): phi({n}) = {phi}"
        + (", as for every prime." if ndiv == 2 else "."),
    )


def numerical_integration(rng: random.Random) -> Worked:
    fn, f, exact_f = rng.choice((
        ("x^2", lambda x: x * x, lambda b: b**3 / 3),
        ("sin(x)", math.sin, lambda b: 1 - math.cos(b)),
        ("e^x", math.exp, lambda b: math.exp(b) - 1),
        ("1/(1+x)", lambda x: 1 / (1 + x), lambda b: math.log(1 + b)),
    ))
    b = round(rng.uniform(0.5, 3.0), 2)
    n = rng.choice((2, 4, 6, 8, 10, 12))
    h = b / n
    ys = [f(i * h) for i in range(n + 1)]
    trap = h * (ys[0] / 2 + sum(ys[1:-1]) + ys[-1] / 2)
    simp = h / 3 * (ys[0] + ys[-1] + 4 * sum(ys[1:-1:2]) + 2 * sum(ys[2:-1:2]))
    exact = exact_f(b)
    return Worked(
        "Trapezoid rule versus Simpson's rule",
        f"Estimate the integral of {fn} from 0 to {num(b)} with n = {n} subintervals, by the trapezoid rule and by "
        "Simpson's rule, and compare with the exact value.",
        f"The step is h = {num(b)} / {n} = {num(h, 4)}; the function values are "
        + ", ".join(f"{y:.5f}" for y in ys) + ".\n"
        f"Trapezoid: h (y0/2 + the inner values + y{n}/2) = {trap:.6f}.\n"
        f"Simpson: (h/3)(y0 + 4 (odd-numbered values) + 2 (inner even-numbered values) + y{n}) = {simp:.6f}.\n"
        f"Exact: {exact:.6f}. The errors are {abs(trap - exact):.2e} (trapezoid) and {abs(simp - exact):.2e} (Simpson); "
        "Simpson's error shrinks like h^4 rather than h^2.",
    )


def kepler_orbit(rng: random.Random) -> Worked:
    gm = 3.986e14
    r_earth = 6.371e6
    h_km = 35786 if rng.random() < 0.1 else rng.randrange(160, 36000)
    r = r_earth + h_km * 1000
    period = 2 * math.pi * math.sqrt(r**3 / gm)
    speed = math.sqrt(gm / r)
    return Worked(
        "A circular orbit around the Earth",
        f"A satellite circles the Earth {h_km} km above the surface. Find its orbital speed and period "
        "(GM = 3.986e14 m^3/s^2, Earth radius 6371 km).",
        f"The orbit radius is r = 6371 + {h_km} = {num(r / 1000)} km = {sig(r, 5)} m.\n"
        f"Gravity supplies the centripetal force: G M m / r^2 = m v^2 / r, so v = sqrt(GM / r) = {num(speed, 1)} m/s "
        f"({num(speed * 3.6, 0)} km/h).\n"
        f"The period is T = 2 pi r / v = 2 pi sqrt(r^3 / GM) = {num(period, 1)} s = {num(period / 60, 2)} min "
        f"= {num(period / 3600, 3)} h." + (" That is one sidereal day: a geostationary orbit." if h_km == 35786 else ""),
    )


TEMPLATES: tuple[Callable[[random.Random], Worked], ...] = (
    projectile, quadratic, polynomial_calculus, sample_statistics, ideal_gas, radioactive_decay,
    spring_oscillator, pendulum, linear_regression, matrix_2x2, binomial, newton_sqrt, elastic_collision,
    taylor_series, euclid, heating, resistors, compound_growth, prime_factors, numerical_integration, kepler_orbit,
)


def worked_problem(rng: random.Random) -> Worked:
    """One worked problem from a randomly chosen template."""
    return TEMPLATES[rng.randrange(len(TEMPLATES))](rng)
