"""Neural-tangents' requirement algebra: may a kernel keep only its diagonal?

A layer's kernel map can often work on the diagonal of a covariance alone (the
batch diagonal ``K(x_i, x_i)``, or the spatial diagonal ``K(x_i[s], x_j[s])``),
which is far cheaper. Whether a whole network can is decided by combining,
layer by layer, two three-valued facts (:class:`Bool`: ``NO < MAYBE < YES``):

* ``input``: may this layer's *input* kernel be diagonal-only? ``YES`` always,
  ``MAYBE`` only if its off-diagonal entries are zero, ``NO`` never;
* ``output``: may every kernel from this layer's output *to the network's*
  be diagonal-only? ``YES``, ``MAYBE`` (yes here, a later layer decides), ``NO``.

:class:`Diagonal` combines them with ``a >> b`` (``b`` applied after ``a``)
and ``a & b`` (two parallel branches: the stricter of each). Composition is
associative, so a network's requirement is the fold of its layers'; it allows
a diagonal-only kernel (``bool(d)``) exactly when ``input is YES`` and
``output`` is not ``NO``.

These are the values neural-tangents 0.6.5 exposes as ``stax.Bool`` and
``stax.Diagonal`` (same names, fields, defaults and operators). jaxtheory's
own kernels choose their layout from ``diagonal_batch`` / ``diagonal_spatial``
directly and do not consult them.

>>> d = Diagonal(input=Bool.YES, output=Bool.MAYBE)
>>> bool(d), bool(d >> Diagonal())
(True, False)
"""

from __future__ import annotations

import dataclasses
import enum


class Bool(enum.IntEnum):
  """Three-valued logic ordered ``NO < MAYBE < YES``; ``&`` is the minimum."""
  NO = 0
  MAYBE = 1
  YES = 2

  def __and__(self, other: "Bool") -> "Bool":
    return Bool(min(self, other))

  __rand__ = __and__


@dataclasses.dataclass(frozen=True)
class Diagonal:
  """Whether a layer's input, and the outputs from it on, may be diagonal-only.

  Attributes:
    input: ``YES`` the layer accepts a diagonal-only input kernel; ``MAYBE`` if
      its off-diagonal entries are zero; ``NO`` it needs the full kernel.
    output: ``YES`` every kernel from here to the network's output may be
      diagonal-only; ``MAYBE`` this layer's may, later layers decide; ``NO``
      they may not.
  """
  input: Bool = Bool.YES
  output: Bool = Bool.NO

  def __rshift__(self, other: "Diagonal") -> "Diagonal":
    """``other`` applied after ``self``: the requirement of the composition."""
    if self.output == Bool.YES:
      # Everything after ``self`` may be diagonal-only whatever ``other`` says.
      return self
    if self.output > Bool.NO and other.input > Bool.NO:
      # ``self`` may hand a diagonal-only kernel on, and ``other`` can take one
      # (at worst when its off-diagonal is zero, which ``self`` then ensures).
      inp = self.input
    elif self.output == Bool.NO and other.input < Bool.YES:
      # ``self`` makes off-diagonal entries that ``other`` may need: full input.
      inp = Bool.NO
    else:
      inp = Bool(min(self.input, other.input))
    return Diagonal(input=inp, output=other.output)

  def __lshift__(self, other: "Diagonal") -> "Diagonal":
    """``self`` applied after ``other`` (``other >> self``)."""
    return other >> self

  def __and__(self, other: "Diagonal") -> "Diagonal":
    """Two parallel branches: the stricter value of each field."""
    return Diagonal(input=self.input & other.input, output=self.output & other.output)

  __rand__ = __and__

  def __bool__(self) -> bool:
    """Whether a diagonal-only kernel suffices (the ``diagonal_*`` flag it allows)."""
    return self.input == Bool.YES and self.output > Bool.NO
