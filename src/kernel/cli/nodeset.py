"""Host name sets as ClusterShell writes them: ``web[1-3,7],db01`` (pure functions).

`expand` turns such a set into names (what ``--server`` accepts), `fold` turns names into the
shortest such set (how ``--group`` and summaries name the hosts that share a result).
"""

from __future__ import annotations

from .errors import UsageError

MAX_NAMES = 100_000  # one --server argument may not expand to more


def split_top(text: str) -> list[str]:
    """Split at commas that are not inside brackets: ``a[1,2],b`` → ``["a[1,2]", "b"]``."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def expand(text: str) -> list[str]:
    """Every name of a set, in its order, without repeats. UsageError for a malformed set."""
    out: dict[str, None] = {}
    for part in split_top(text):
        for name in _expand_one(part, text):
            out[name] = None
            if len(out) > MAX_NAMES:
                raise UsageError(f"{text[:60]!r} names more than {MAX_NAMES} hosts")
    return list(out)


def _expand_one(part: str, whole: str) -> list[str]:
    open_ = part.find("[")
    if open_ < 0:
        if "]" in part:
            raise UsageError(f"host set {whole!r} has a ']' without '['")
        return [part]
    close = part.find("]", open_)
    if close < 0 or "[" in part[open_ + 1 : close]:
        raise UsageError(f"host set {whole!r} has an unclosed or nested '['")
    head, body, tail = part[:open_], part[open_ + 1 : close], part[close + 1 :]
    numbers: list[str] = []
    for piece in body.split(","):
        lo, dash, hi = piece.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or not lo.isascii():
            raise UsageError(f"host set {whole!r}: {piece!r} is not a number or a range a-b")
        if not dash:
            numbers.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a:
            raise UsageError(f"host set {whole!r}: range {piece!r} goes backwards")
        if b - a >= MAX_NAMES:
            raise UsageError(f"host set {whole!r} names more than {MAX_NAMES} hosts")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        numbers.extend(str(n).zfill(width) for n in range(a, b + 1))
    rests = _expand_one(tail, whole) if tail else [""]
    return [f"{head}{n}{rest}" for n in numbers for rest in rests]


def _split_number(name: str) -> tuple[str, str, str] | None:
    """(prefix, digits, suffix) around the last run of digits, or None."""
    end = len(name)
    while end > 0 and not name[end - 1].isdigit():
        end -= 1
    if end == 0:
        return None
    start = end
    while start > 0 and name[start - 1].isdigit():
        start -= 1
    digits = name[start:end]
    if not digits.isascii():
        return None
    return name[:start], digits, name[end:]


def fold(names: list[str]) -> str:
    """The shortest ``prefix[ranges]suffix`` set for ``names`` (sorted, comma-separated)."""
    groups: dict[tuple[str, str, int], set[int]] = {}
    plain: set[str] = set()
    loose: list[tuple[str, str, str]] = []
    for name in set(names):
        parts = _split_number(name)
        if parts is None:
            plain.add(name)
            continue
        prefix, digits, suffix = parts
        if digits.startswith("0") and len(digits) > 1:
            groups.setdefault((prefix, suffix, len(digits)), set()).add(int(digits))
        else:
            loose.append(parts)
    for prefix, digits, suffix in loose:
        # web10 joins web[01-09] (same width, no zero to pad); web7 does not.
        key = (prefix, suffix, len(digits))
        groups.setdefault(key if key in groups else (prefix, suffix, 0), set()).add(int(digits))
    items: list[tuple[str, str]] = [(n, n) for n in plain]
    for (prefix, suffix, width), numbers in groups.items():
        nums = sorted(numbers)
        if len(nums) == 1:
            name = f"{prefix}{str(nums[0]).zfill(width)}{suffix}"
            items.append((name, name))
            continue
        ranges = []
        start = prev = nums[0]
        for n in [*nums[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            a, b = str(start).zfill(width), str(prev).zfill(width)
            ranges.append(a if start == prev else f"{a}-{b}")
            if n is not None:
                start = prev = n
        first = f"{prefix}{str(nums[0]).zfill(width)}{suffix}"
        items.append((first, f"{prefix}[{','.join(ranges)}]{suffix}"))
    return ",".join(text for _key, text in sorted(items, key=_natural))


def _natural(item: tuple[str, str]) -> tuple[object, ...]:
    parts = _split_number(item[0])
    if parts is None:
        return (item[0], 0, "")
    return (parts[0], int(parts[1]), parts[2])
