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
_LAPACK = 'custom_call_target="lapack_'


def _computations(hlo: str):
  """``(name, [(instruction, right-hand side)])`` per computation, names without ``ENTRY``/``%``."""
  name, body = None, []
  for line in hlo.splitlines():
    if line.rstrip().endswith("{") and "=" not in line.split("(")[0]:
      name, body = line.split("(")[0].split()[-1].lstrip("%"), []
    elif line.strip() == "}":
      if name is not None:
        yield name, body
      name = None
    elif name is not None:
      m = _INSTR.match(line)
      if m:
        body.append((m.group(1), m.group(2)))


def factorizations_in_turn(hlo: str) -> list[tuple[int, bool]]:
  """``(count, ordered)`` for each computation of ``hlo`` that holds a LAPACK call.

  A loop or call whose computation holds LAPACK calls counts as one: what
  follows it must depend on it, and it on the call before.
  """
  comps = dict(_computations(hlo))
  holds = {c: any(_LAPACK in rhs for _, rhs in body) for c, body in comps.items()}
  for _ in comps:  # through nested calls
    holds = {c: h or any(holds.get(r, False) for _, rhs in comps[c] for r in _REF.findall(rhs))
             for c, h in holds.items()}
  out = []
  for body in comps.values():
    names = {n for n, _ in body}
    deps, calls, ordered = {}, [], True
    for n, rhs in body:
      refs = _REF.findall(rhs)
      d = set()
      for r in refs:
        if r in names:
          d |= deps.get(r, set()) | {r}
      if _LAPACK in rhs or any(r not in names and holds.get(r, False) for r in refs):
        ordered &= not calls or calls[-1] in d
        calls.append(n)
      deps[n] = d
    if calls:
      out.append((len(calls), ordered))
  return out
