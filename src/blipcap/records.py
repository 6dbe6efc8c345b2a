"""One helper for the JSON records of result dataclasses: named fields, in order."""

from __future__ import annotations

from typing import Any


def as_record(obj: object, names: str, **values: Any) -> dict[str, Any]:
    """``{name: obj.name}`` for the space-separated ``names``, in that order.

    A name given in ``values`` takes that value instead (a nested record, a
    renamed or rounded field), so the key order stays that of ``names``.
    """
    return {n: values[n] if n in values else getattr(obj, n) for n in names.split()}
