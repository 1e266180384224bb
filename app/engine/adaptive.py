"""Adaptive draft length: choose each round how many tokens to guess, from what the last rounds cost and won.

A fixed `draft_max` is a compromise: code and edits (long runs the draft gets right) want long drafts,
prose (the draft is often wrong after two or three tokens) wants short ones, and a machine where the draft
is almost as slow as the target wants none at all. The controller measures, during the generation itself:

* the **acceptance** α — the chance that the next guess is accepted given the previous ones were: counted
  as successes (accepted guesses) and failures (the one rejected guess that ended a round), with
  exponential forgetting (per guess: the last ~30 count) so it follows the text as it changes;
* the **draft cost** of a round that guesses n tokens, per n (the proposer's own seconds) — the first
  rounds draft a short and then the longest length, so that the fixed part of a round (the draft reading
  the tokens it has not seen) and the part per guess are told apart;
* the **verify cost** of a batch of k tokens, per k — k = 1 is the plain step, which the controller
  measures first (its first round drafts nothing), since that is what drafting must beat.

Unmeasured lengths are read off a straight line through the measured ones (cost = base + slope · n).
Costs follow a drop fast and a rise slowly: on a busy machine single measurements are often inflated by
other programs, never deflated.

A round with n guesses emits on average E(n) = 1 + α + … + α^n = (1 − α^(n+1)) / (1 − α) tokens and costs
T(n) = draft(n) + verify(n + 1); the controller picks the n in [0, max] with the highest E(n) / T(n) (the
longest within 3 % of it: the optimum is flat, and fewer rounds mean less per-round overhead), and starts
drafting only when that beats a plain step (n = 0) by more than 3 % — and stops only when it loses by 3 %
(switching on noise costs: the draft must read a whole plain stretch before it drafts again) — so a useless
draft switches itself off. While
it is off, a round drafts again now and then to notice when the text has become predictable: after 16
plain steps, then twice as many after each probe that changed nothing (up to 256); a probe whose every
guess was right is followed by another one at once. Where drafting could
not gain even 10 % if every guess were accepted (the draft is too slow next to the target on this machine)
no text can make it pay for a probe (a draft model first has to read the tokens it missed): the controller
stays plain for 1024 steps (across replies: the engine keeps it), and tells the loop (`drafting_expected`)
that the draft model need not even read the next prompts.

**Draft confidence.** The draft model's top-token probability says when its next guess is likely wrong.
Each guessed position is recorded with that probability and whether the target accepted it; from these
the controller learns, per probability band, how often guesses are accepted, and returns a cut-off: the
lowest probability at which one more guess is still worth its cost (acceptance × value of a token >
marginal cost), never above 0.5, judged only on bands with enough evidence (stopping ends the whole draft,
including the likely guesses after the unsure one, and a guess never drafted is never measured). Judging
which guesses of a proposal to *verify* (`best_prefix`) starts instead from the confidence itself, as if it
were a calibrated probability, and explores a band the prior turns down until it is measured. The speculative loop hands it to the proposer, which stops at the first guess below it.

Only the draft length (and the draft's early stop) changes: the target still verifies every token, so
greedy output stays token-identical to plain decoding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AdaptiveDraftController", "expected_tokens"]

# confidence bands (upper edges) for the draft's top-token probability
_BANDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0 + 1e-9)
# the cut-off never goes above this: stopping ends the whole draft, and with it the (often right) guesses
# that would follow the unsure one — and a guess that is never drafted is never measured
_MAX_CUT = 0.5
# weight, in guesses, of a band's prior acceptance (its confidence) against the guesses measured in it
_BAND_PRIOR = 4.0
# best_prefix verifies proposals of a band the prior turns down until this many of its guesses were measured —
# bands from this confidence up (a weaker guess would mostly cost a verify row to learn that it is weak)
_EXPLORE = 1.0
_EXPLORE_FROM = 0.6


def expected_tokens(alpha: float, n: int) -> float:
    """Tokens a round with `n` guesses emits on average when each guess is accepted with chance `alpha`."""
    if n <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(n + 1)
    return (1.0 - alpha ** (n + 1)) / (1.0 - alpha)


@dataclass
class _Decayed:
    """An exponentially forgotten sum."""

    value: float = 0.0

    def add(self, x: float, decay: float) -> None:
        self.value = self.value * decay + x


class AdaptiveDraftController:
    """Picks the draft length of the next round (see the module docstring).

    Usage by the loop, each round: `n = next_length()`, propose at most n, verify, then `observe(...)`.
    One controller may serve many generations of the same pair of models: what it learned carries over.
    """

    PROBE_FIRST = 16  # plain steps before drafting is tried again (doubling after each probe, up to PROBE_MAX)
    PROBE_MAX = 256
    PROBE_HOPELESS_STEPS = 1024  # ... when drafting could not gain PROBE_MIN_GAIN even with every guess accepted
    PROBE_MIN_GAIN = 0.10

    def __init__(
        self,
        n_cap: int,
        *,
        n_min: int = 0,
        n_start: int | None = None,
        decay: float = 0.97,
        prior_alpha: float = 0.7,
        prior_weight: float = 1.0,
        verify_slope_prior: float = 0.15,
        learn_confidence: bool = True,
    ) -> None:
        if n_cap < 1:
            raise ValueError(f"the largest draft length must be at least 1, got {n_cap}")
        if not (0 <= n_min <= n_cap):
            raise ValueError(f"the smallest draft length must be between 0 and {n_cap}, got {n_min}")
        if not (0.0 < decay <= 1.0):
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.n_cap = n_cap
        self.n_min = n_min
        self.decay = decay
        self.prior_alpha = prior_alpha
        self.prior_weight = prior_weight
        self.verify_slope_prior = verify_slope_prior
        self.learn_confidence = learn_confidence
        self._succ = _Decayed()
        self._fail = _Decayed()
        self._draft: dict[int, float] = {}  # guesses drafted -> seconds of that round's drafting (tracked)
        self._verify: dict[int, float] = {}  # batch size -> seconds (tracked)
        self._fitted: tuple[tuple[float, float] | None, tuple[float, float] | None] | None = None
        # per confidence band: decayed counts of (tried, accepted) guesses
        self._band_tried = [0.0] * len(_BANDS)
        self._band_acc = [0.0] * len(_BANDS)
        self._rounds = 0
        self._prev_asked = -1
        self._plain_streak = 0
        self._probe_after = self.PROBE_FIRST
        self._probing = False  # the round being played is a probe
        self.flat = 0.03
        self._n_start = min(n_cap, max(n_min, n_start if n_start is not None else min(4, n_cap)))
        self._n = self._n_start
        self.history: list[int] = []  # the lengths chosen, for stats and tests

    # -- estimates ----------------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        """Estimated chance that a guess is accepted (given the ones before it were)."""
        s = self._succ.value + self.prior_alpha * self.prior_weight
        f = self._fail.value + (1.0 - self.prior_alpha) * self.prior_weight
        return s / (s + f)

    def _lines(self) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """The (verify, draft) cost lines, fitted once per new measurement (verify: through the batches of
        two or more tokens when there are any, see verify_cost)."""
        if self._fitted is None:
            batches = {k: t for k, t in self._verify.items() if k > 1} or self._verify
            self._fitted = (
                _line(batches, self.verify_slope_prior, through_origin=False),
                _line(self._draft, 1.0, through_origin=True),
            )
        return self._fitted

    def verify_cost(self, k: int) -> float | None:
        """Estimated seconds to verify a batch of k tokens (None before any measurement).

        A one-token step is its own measurement when there is one: on a CPU the step from one token to two
        can cost far more than each token after that (one token streams the weights once; a batch multiplies
        them for every token), so a straight line through both kinds would make short drafts look cheap.
        """
        if k == 1 and 1 in self._verify and len(self._verify) > 1:
            return self._verify[1]
        line = self._lines()[0]
        if line is None:
            return None
        return max(line[0] + line[1] * k, 1e-6)

    def draft_cost(self, n: int) -> float:
        """Estimated seconds to draft n guesses (0 before any measurement, and for n = 0)."""
        if n <= 0:
            return 0.0
        line = self._lines()[1]
        return 0.0 if line is None else max(line[0] + line[1] * n, 0.0)

    def rate(self, n: int, alpha: float | None = None) -> float:
        """Expected tokens per second of a round with n guesses (0 before costs are known)."""
        v = self.verify_cost(n + 1)
        if v is None:
            return 0.0
        a = self.alpha if alpha is None else alpha
        return expected_tokens(a, n) / (self.draft_cost(n) + v)

    @property
    def hopeless(self) -> bool:
        """Even if every guess were accepted, drafting would gain less than PROBE_MIN_GAIN over plain steps.

        Then probing is not worth its price: a probe after m plain steps makes a draft model first read
        those m tokens, which costs more than such a small gain can win back.
        """
        if not self._draft or 1 not in self._verify:
            return False
        bar = self.rate(0) * (1.0 + self.PROBE_MIN_GAIN)
        return all(self.rate(n, alpha=1.0) < bar for n in range(max(self.n_min, 1), self.n_cap + 1))

    # -- the two calls the loop makes -----------------------------------------------------------------
    def next_length(self, judged_per_guess: bool = False) -> int:
        """How many tokens to draft in the next round (0 = a plain step).

        `judged_per_guess`: the proposer rates each guess (confidences) and guessing itself costs next to
        nothing (no draft model): then the most it may guess is asked for, and `best_prefix` decides how much
        of the proposal is worth verifying — a long match is verified at length even where the average
        guess is poor, and a weak one is not verified at all.
        """
        if 1 not in self._verify and self.n_min == 0:
            self._n = 0  # measure the plain step first: it is what drafting has to beat
        elif not self._draft:
            self._n = self._n_start  # measure a drafting round
        elif len(self._draft) < 2 and self.n_cap > self._n_start and self.n_cap not in self._draft:
            # and one of the longest: a round's drafting has a fixed part (the draft reads what it missed) and
            # a part per guess, which two lengths tell apart
            self._n = self.n_cap
        elif judged_per_guess and self.drafting_is_free:
            self._n = self.n_cap
        else:
            self._n = self._choose()
        self.history.append(self._n)
        return self._n

    @property
    def drafting_is_free(self) -> bool:
        """A guess costs next to nothing to make (under 2 % of a plain step): no draft model."""
        return bool(self._draft) and self.draft_cost(1) < 0.02 * (self.verify_cost(1) or 0.0)

    def best_prefix(self, confidences: Sequence[float], spent: float = 0.0) -> int:
        """How many of a proposal's guesses to verify (0: none), from their confidences and the costs.

        Each confidence becomes a chance of acceptance through its band (measured, starting from the
        confidence itself); the prefix with the most expected tokens per second of the round — `spent`
        seconds of drafting, already paid, plus verifying — wins, if it beats verifying none by the margin;
        while a band has hardly been measured, its best prefix is verified anyway (so that the prior is
        corrected by evidence).
        """
        v1 = self.verify_cost(1)
        if v1 is None or not confidences:
            return len(confidences)
        best_n, best_rate = 0, (1.0 + self.flat) / (spent + v1)
        try_n, try_rate = 1, 0.0  # the best length of all, for a guess whose band is still unexplored
        expected, chance = 1.0, 1.0
        for n, c in enumerate(confidences, 1):
            chance *= self._band_rate(_band(c))
            expected += chance
            rate = expected / (spent + (self.verify_cost(n + 1) or v1))
            if rate > best_rate:
                best_n, best_rate = n, rate
            if rate > try_rate:
                try_n, try_rate = n, rate
        if best_n == 0 and confidences[0] >= _EXPLORE_FROM and self._band_tried[_band(confidences[0])] < _EXPLORE:
            # a band the prior alone turns down: verify a few of its proposals, so what it is really worth
            # gets measured (verifying nothing would never teach anything)
            best_n = try_n
        return max(best_n, min(self.n_min, len(confidences)))

    def _band_rate(self, b: int) -> float:
        """Acceptance of guesses in confidence band `b`: measured, from a prior of the band's middle."""
        lo = _BANDS[b - 1] if b > 0 else 0.0
        mid = (lo + min(_BANDS[b], 1.0)) / 2
        return (self._band_acc[b] + _BAND_PRIOR * mid) / (self._band_tried[b] + _BAND_PRIOR)

    def _choose(self) -> int:
        self._probing = False
        lo = max(self.n_min, 1)
        rates = {n: self.rate(n) for n in range(lo, self.n_cap + 1)}
        best = max(rates.values())
        # the optimum is usually flat: the longest length within `flat` of the best (fewer rounds, so less of
        # the per-round overhead the model leaves out)
        drafting_n = max(n for n, r in rates.items() if r >= best * (1.0 - self.flat))
        # drafting has to beat the plain step clearly to start (a tie goes to plain decoding, which is never
        # slower), and to lose clearly to stop: switching back and forth on noise costs, as the draft has to
        # read every token of a plain stretch before it drafts again
        drafting_now = self._n > 0 and self._plain_streak == 0
        bar = self.rate(0) * (1.0 - self.flat if drafting_now else 1.0 + self.flat)
        if self.n_min > 0 or best > bar:
            self._plain_streak = 0
            self._probe_after = self.PROBE_FIRST
            return drafting_n
        # drafting looks useless; still probe now and then, in case the text became predictable
        self._plain_streak += 1
        if self.hopeless:
            # it would lose even with every guess accepted: no text can change that, only the machine's load
            if self._plain_streak <= self.PROBE_HOPELESS_STEPS:
                return 0
        elif self._plain_streak <= self._probe_after:
            return 0
        self._plain_streak = 0
        self._probe_after = min(2 * self._probe_after, self.PROBE_MAX)
        self._probing = True
        # a probe long enough to tell predictable text: a single guess says little
        return max(drafting_n, self._n_start)

    @property
    def drafting_expected(self) -> bool:
        """False once drafting is known not to pay here (a draft model then need not read the prompt)."""
        return not (self._draft and self._verify and self.hopeless)

    def confidence_cutoff(self) -> float:
        """The draft's top-token probability below which one more guess does not pay (0 = no cut)."""
        if not self.learn_confidence or not self._draft or not self._verify:
            return 0.0
        v1 = self.verify_cost(1)
        v2 = self.verify_cost(2)
        if v1 is None or v2 is None:
            return 0.0
        # one more guess costs a draft step and one more verify row; it wins (when accepted) the time of
        # about one plain step
        marginal = max(self.draft_cost(2) - self.draft_cost(1), 0.0) + max(v2 - v1, 0.0)
        value = v1
        need = marginal / value if value > 0 else 1.0
        cut = 0.0
        for i, hi in enumerate(_BANDS):
            if hi > _MAX_CUT + 1e-9:
                break  # a guess the draft is this sure of is never cut
            tried = self._band_tried[i]
            if tried < 8.0:
                continue  # not enough evidence about this band: a guess never drafted is never measured
            if self._band_acc[i] / tried >= need:
                break  # guesses this sure pay off: cut no higher
            cut = hi  # guesses in this band (and below) lose time on average
        return cut

    def observe(
        self,
        *,
        asked: int,
        drafted: int,
        accepted: int,
        draft_seconds: float,
        verify_seconds: float,
        confidences: Sequence[float] = (),
        verified: int | None = None,
    ) -> None:
        """Record a finished round: `asked` = the length allowed, `drafted` guessed (what `draft_seconds`
        paid for), `verified` of them checked by the target (default: all; fewer when `best_prefix` cut the
        proposal), `accepted` kept."""
        self._rounds += 1
        self._fitted = None
        paid_for = drafted
        drafted = paid_for if verified is None else verified
        if self._probing and drafted > 0 and accepted == drafted:
            # the probe was right all along: the text may have become predictable, probe again at once
            self._probe_after = self.PROBE_FIRST
            self._plain_streak = self.PROBE_FIRST
        caught_up = self._prev_asked == 0
        self._prev_asked = asked
        # acceptance: every accepted guess is a success; the guess that ended the round a failure. Rounds
        # without guesses say nothing about it (the estimate keeps its last value)
        if drafted > 0:
            # forget per guess whose outcome is known (the accepted ones and the rejected one), so the memory
            # spans about the same number of guesses however long the drafts are
            rejected = 1.0 if accepted < drafted else 0.0
            d = self.decay ** (accepted + rejected)
            self._succ.add(float(accepted), d)
            self._fail.add(rejected, d)
        # draft costs. Skipped: a round after a plain step (the draft catches up on the tokens it missed: not
        # the price of a round that follows a drafting one)
        if not caught_up and paid_for > 0 and draft_seconds >= 0.0:
            self._draft[paid_for] = _track(self._draft.get(paid_for), draft_seconds)
        elif not self._draft and paid_for == 0 and asked > 0:
            # the history found nothing: proposing itself is (nearly) free
            self._draft[1] = max(draft_seconds, 0.0)
        if verify_seconds > 0.0:
            k = drafted + 1
            self._verify[k] = _track(self._verify.get(k), verify_seconds)
        # confidence bands: positions that were tried (accepted ones, then the rejected one)
        if confidences:
            tried = min(len(confidences), accepted + (1 if accepted < drafted else 0))
            for i in range(tried):
                b = _band(confidences[i])
                self._band_tried[b] = self._band_tried[b] * 0.97 + 1.0
                self._band_acc[b] = self._band_acc[b] * 0.97 + (1.0 if i < accepted else 0.0)

    def describe(self) -> str:
        v1 = self.verify_cost(1)
        return (
            f"alpha={self.alpha:.2f} n={self._n} draft1={self.draft_cost(1) * 1e3:.1f}ms "
            f"verify1={(v1 or 0.0) * 1e3:.1f}ms cut={self.confidence_cutoff():.2f}"
        )


def _line(points: dict[int, float], slope_prior: float, through_origin: bool) -> tuple[float, float] | None:
    """(base, slope) of a cost line through measured (size, seconds) points; None before any.

    With one point: verify costs assume each extra token costs `slope_prior` of the first one; draft costs
    (`through_origin`) assume each guess costs the same. With more: least squares, the slope never negative.
    """
    if not points:
        return None
    pts = list(points.items())
    if len(pts) == 1:
        k0, t0 = pts[0]
        if through_origin:
            return 0.0, t0 / max(k0, 1)
        unit = t0 / (1.0 + slope_prior * (k0 - 1))
        return unit * (1.0 - slope_prior), unit * slope_prior
    n = len(pts)
    mk = sum(p[0] for p in pts) / n
    mt = sum(p[1] for p in pts) / n
    var = sum((p[0] - mk) ** 2 for p in pts)
    slope = max(sum((p[0] - mk) * (p[1] - mt) for p in pts) / var, 0.0) if var > 0 else 0.0
    return mt - slope * mk, slope


def _track(old: float | None, new: float) -> float:
    """A running cost estimate that follows drops fast and rises slowly: a time measurement is only ever
    inflated by noise (another program took the core, a page fault), never deflated."""
    if old is None:
        return new
    return old + (0.5 if new < old else 0.1) * (new - old)


def _band(p: float) -> int:
    if math.isnan(p):
        return 0
    for i, hi in enumerate(_BANDS):
        if p < hi:
            return i
    return len(_BANDS) - 1
