"""A run's tags: short labels a team files its runs under ("ablation", "hive-v2", "paper.fig3").

One rule for every way in (the API's create and update, the run page's tag form): trimmed,
lowercased (so "HIVE" and "hive" are one tag and a filter finds both), 1 to ``TAG_MAX``
letters, digits, ``-``, ``_`` or ``.``, at most ``TAGS_MAX`` a run, duplicates dropped in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from workers.engines.config import ConfigError, FieldError

TAG_MAX = 32
TAGS_MAX = 16
TAG = re.compile(rf"^[a-z0-9._-]{{1,{TAG_MAX}}}$")


def tags_clean(raw: Iterable[object] | str | None, field: str = "tags") -> list[str]:
    """The tags as stored; a ConfigError names every tag that is not one and says what is allowed.

    A string is split on commas and spaces (the run page's single text field)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [part for part in re.split(r"[,\s]+", raw) if part]
    elif not isinstance(raw, list | tuple):
        raise ConfigError([FieldError(field, "give a list of tags, e.g. [\"ablation\", \"hive\"]")])
    tags: list[str] = []
    errors = []
    for item in raw:
        if not isinstance(item, str):
            errors.append(FieldError(field, f"{item!r} is not text: a tag is 1-{TAG_MAX} letters, digits, - _ or ."))
            continue
        tag = item.strip().lower()
        if not TAG.match(tag):
            shown = item if len(item) <= 40 else item[:40] + "…"
            errors.append(FieldError(field, f"{shown!r} is not a tag: use 1-{TAG_MAX} letters, digits, -, _ or . "
                                            "(no spaces), e.g. hive-v2"))
        elif tag not in tags:
            tags.append(tag)
    if len(tags) > TAGS_MAX:
        errors.append(FieldError(field, f"{len(tags)} tags: a run takes at most {TAGS_MAX}; remove "
                                        f"{len(tags) - TAGS_MAX}"))
    if errors:
        raise ConfigError(errors)
    return tags


def tag_or_none(raw: str | None) -> str | None:
    """A list filter's tag as stored (lowercased), or None when ``raw`` cannot be one."""
    tag = (raw or "").strip().lower()
    return tag if TAG.match(tag) else None
