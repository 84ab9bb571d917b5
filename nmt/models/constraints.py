"""Lexically constrained beam search: every output must contain given token sequences. This
module keeps the bookkeeping (:class:`Progress`, :func:`allocate`);
:func:`nmt.models.search.constrained_beam_search` runs it.

Dynamic beam allocation (Post & Vilar 2018): each sentence has constraints, sequences of target
ids (a glossary's target terms), and each hypothesis tracks which it has met and how far it is
into the one it is placing. At each step the candidates of a sentence are the unconstrained
search's best ``2K`` (beam x vocabulary), each beam's single best token, and each beam's next
token of every constraint it has not met; they are grouped into *banks* by the number of
constraint tokens met (0 ... C, C the constraints' total length), the K beams are shared
among the banks (``K // (C + 1)`` each, the remainder to the fullest banks) and filled by score
within each bank, then any slot left over goes to the best remaining candidates. So
hypotheses that have placed more of the terms survive beside the ones the model likes best,
and the terms find their place in the sentence instead of being forced at its start.

A hypothesis may end (EOS) only once it has met every constraint, except at its length limit,
where EOS is forced as in :func:`~nmt.models.search.beam_search`; finished hypotheses that
met them all rank above those that did not. Starting a constraint and leaving it half placed
drops its progress (the next token may start it, or another, again). The beam is widened to
``C + 1`` when it is narrower, so that every bank has a slot.

It runs on the model's incremental API only (``encode``, ``init_state``, ``expand``,
``step``, ``reorder``), so it works with copy attention, ensembles and the ONNX backend. The
candidate bookkeeping is per sentence in Python: slower than the unconstrained search, and used
only for the sentences that have constraints (:func:`~nmt.models.search.decode_all` sends the
others through the unconstrained search, which then gives byte for byte what it gives without
a glossary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A hypothesis's constraint state: which constraints are met, and the one in progress
    (its index and how many of its tokens are placed; -1 when none)."""

    met: tuple[bool, ...]
    current: int = -1
    placed: int = 0

    def advance(self, token: int, constraints: Sequence[Sequence[int]]) -> Progress:
        """The state after emitting ``token``."""
        met = self.met
        if self.current >= 0 and constraints[self.current][self.placed] == token:
            placed = self.placed + 1
            if placed == len(constraints[self.current]):
                met = met[:self.current] + (True,) + met[self.current + 1:]
                return Progress(met)
            return Progress(met, self.current, placed)
        for index, ids in enumerate(constraints):  # the token may start an unmet one
            if not met[index] and ids[0] == token:
                if len(ids) == 1:
                    return Progress(met[:index] + (True,) + met[index + 1:])
                return Progress(met, index, 1)
        return Progress(met)

    def tokens_met(self, constraints: Sequence[Sequence[int]]) -> int:
        """Constraint tokens placed: whole met constraints plus the one in progress."""
        return sum(len(c) for c, m in zip(constraints, self.met, strict=True) if m) + \
            (self.placed if self.current >= 0 else 0)

    def next_tokens(self, constraints: Sequence[Sequence[int]]) -> set[int]:
        """The tokens that advance a constraint: the next of the one in progress and the first
        of every unmet one."""
        out = {ids[0] for ids, m in zip(constraints, self.met, strict=True) if not m}
        if self.current >= 0:
            out.add(constraints[self.current][self.placed])
        return out


def allocate(candidates: list[tuple[float, int, int, Progress, int]], k: int,
              banks: int) -> list[tuple[float, int, int, Progress, int]]:
    """K candidates (score, beam, token, progress, bank) shared among ``banks`` banks: an
    equal quota each (the remainder to the highest banks) filled by score, then the best of
    the rest."""
    ranked = sorted(candidates, key=lambda c: -c[0])
    quota = [k // banks + (1 if bank >= banks - k % banks else 0) for bank in range(banks)]
    chosen, rest = [], []
    for cand in ranked:
        if quota[cand[4]] > 0 and len(chosen) < k:
            quota[cand[4]] -= 1
            chosen.append(cand)
        else:
            rest.append(cand)
    chosen += rest[:k - len(chosen)]
    return sorted(chosen, key=lambda c: -c[0])
