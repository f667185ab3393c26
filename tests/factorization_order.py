"""Whether a compiled CPU program may run two LAPACK factorizations at once.

On CPU, XLA's batched LAPACK kernels block a thread of the pool that runs the
program until their pieces are done; independent ones side by side can take
every thread and deadlock. :func:`factorizations_in_turn` reads the optimized
HLO (what the runtime schedules from, after XLA has dropped what it may) and
says, per computation, whether each LAPACK call depends on the one before.
"""

import re

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_REF = re.compile(r"%([\w.\-]+)")


def _computations(hlo: str):
  name, body = None, []
  for line in hlo.splitlines():
    if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
      name, body = line.split("(")[0].strip(), []
    elif line.strip() == "}":
      if name is not None:
        yield name, body
      name = None
    elif name is not None:
      m = _INSTR.match(line)
      if m:
        body.append((m.group(1), m.group(2)))


def factorizations_in_turn(hlo: str) -> list[tuple[int, bool]]:
  """``(count, ordered)`` for each computation of ``hlo`` that holds a LAPACK call."""
  out = []
  for _, body in _computations(hlo):
    names = {n for n, _ in body}
    deps, calls, ordered = {}, [], True
    for n, rhs in body:
      d = set()
      for r in _REF.findall(rhs):
        if r in names:
          d |= deps.get(r, set()) | {r}
      if 'custom_call_target="lapack_' in rhs:
        ordered &= not calls or calls[-1] in d
        calls.append(n)
      deps[n] = d
    if calls:
      out.append((len(calls), ordered))
  return out
