"""NT's requirement algebra (``stax.Bool``, ``stax.Diagonal``): the laws and a few hand-worked values."""

import itertools

from jaxtheory import stax
from jaxtheory.kernels.requirements import Bool, Diagonal

ALL = [Diagonal(i, o) for i, o in itertools.product(Bool, repeat=2)]


def test_bool_is_three_valued_and_and_is_the_minimum():
  assert list(Bool) == [Bool.NO, Bool.MAYBE, Bool.YES]
  assert (Bool.YES & Bool.MAYBE) is Bool.MAYBE and (Bool.NO & Bool.YES) is Bool.NO
  assert stax.Bool is Bool and stax.Diagonal is Diagonal


def test_composition_is_associative_and_left_shift_mirrors_it():
  for a, b, c in itertools.product(ALL, repeat=3):
    assert (a >> b) >> c == a >> (b >> c), (a, b, c)
    assert c << (b << a) == (c << b) << a == (a >> b) >> c


def test_and_is_commutative_associative_idempotent():
  for a, b, c in itertools.product(ALL, repeat=3):
    assert a & b == b & a and (a & b) & c == a & (b & c) and a & a == a


def test_hand_worked_values():
  Y, M, N = Bool.YES, Bool.MAYBE, Bool.NO
  # A layer whose outputs may all be diagonal absorbs whatever follows.
  assert Diagonal(M, Y) >> Diagonal(N, N) == Diagonal(M, Y)
  # Diagonal-only may pass on (MAYBE) into a layer that accepts it: the first input decides.
  assert Diagonal(Y, M) >> Diagonal() == Diagonal(Y, N)
  # Off-diagonal entries made (output NO) for a layer that may need them: full input.
  assert Diagonal(N, N) >> Diagonal(M, Y) == Diagonal(N, Y)
  assert Diagonal(M, N) >> Diagonal(Y, Y) == Diagonal(M, Y)
  assert Diagonal(Y, M) & Diagonal(M, Y) == Diagonal(M, M)
  assert [bool(d) for d in (Diagonal(), Diagonal(Y, M), Diagonal(M, Y), Diagonal(Y, Y))] == [
      False, True, False, True]
