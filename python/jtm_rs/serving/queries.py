"""A ``POST /recommend`` body, checked, into :class:`Query` objects — or a :class:`BadRequest`
that names what is wrong (the service answers it with a 4xx, never a 500).

One user::

    {"history": [ids, oldest first], "m": 200, "exclude_history": true}

Many users in one request::

    {"users": [{"history": [...], "m": 10}, ...]}

Ids are the data's own (integers or strings, as the model was trained); unknown ones are
reported per user and left out of the features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Tuple

#: Largest ``m`` a query may ask for (and at most the catalogue).
MAX_M = 10_000


@dataclass(frozen=True)
class Limits:
    max_history: int = 10_000
    max_users: int = 1_000


@dataclass(frozen=True)
class Query:
    history: tuple
    m: int
    exclude_history: bool


class BadRequest(Exception):
    """A request the service refuses: ``status`` (4xx) and a reason for the client."""

    def __init__(self, status: int, reason: str, kind: str):
        super().__init__(reason)
        self.status, self.reason, self.kind = status, reason, kind


def json_object(body: bytes) -> dict:
    """The body as a JSON object, or the :class:`BadRequest` that says why not."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(400, f"the body is not JSON: {e}", "malformed_json") from None
    if not isinstance(doc, dict):
        raise BadRequest(422, "the body must be a JSON object", "wrong_type")
    return doc


def reload_path(body: bytes, default: str) -> str:
    """``POST /admin/reload``'s ``{"path": DIR}`` (an empty body: ``default``)."""
    doc = json_object(body) if body.strip() else {}
    path = doc.get("path", default)
    if not isinstance(path, str):
        raise BadRequest(422, "the body must be {\"path\": \"<saved model directory>\"}", "wrong_type")
    return path


def parse(body: bytes, n_items: int, int_ids: bool, limits: Limits) -> Tuple[List[Query], bool]:
    """``(queries, batched)``: ``batched`` when the body used the ``users`` form."""
    doc = json_object(body)
    if "users" in doc:
        users = doc["users"]
        if not isinstance(users, list) or not users:
            raise BadRequest(422, "'users' must be a non-empty list of objects", "wrong_type")
        if len(users) > limits.max_users:
            raise BadRequest(413, f"{len(users)} users in one request; at most {limits.max_users}", "too_many_users")
        unexpected = set(doc) - {"users"}
        if unexpected:
            raise BadRequest(422, f"unknown field(s) {sorted(unexpected)} beside 'users'", "unknown_field")
        return [_query(u, n_items, int_ids, limits, f"users[{i}]") for i, u in enumerate(users)], True
    return [_query(doc, n_items, int_ids, limits, "body")], False


def _query(doc, n_items: int, int_ids: bool, limits: Limits, where: str) -> Query:
    if not isinstance(doc, dict):
        raise BadRequest(422, f"{where} must be an object", "wrong_type")
    unexpected = set(doc) - {"history", "m", "exclude_history"}
    if unexpected:
        raise BadRequest(422, f"{where}: unknown field(s) {sorted(unexpected)}", "unknown_field")
    if "history" not in doc:
        raise BadRequest(422, f"{where}: 'history' (a list of item ids, oldest first) is required", "missing_field")
    history = doc["history"]
    if not isinstance(history, list):
        raise BadRequest(422, f"{where}: 'history' must be a list of item ids", "wrong_type")
    if not history:
        raise BadRequest(422, f"{where}: 'history' is empty; give at least one item", "empty_history")
    if len(history) > limits.max_history:
        raise BadRequest(413, f"{where}: 'history' holds {len(history)} items; at most {limits.max_history}",
                         "history_too_long")
    want = "integers" if int_ids else "strings"
    for i, x in enumerate(history):
        ok = (isinstance(x, int) and not isinstance(x, bool) and -2**63 <= x < 2**63) if int_ids else isinstance(x, str)
        if not ok:
            raise BadRequest(422, f"{where}: history[{i}] is {json.dumps(x)[:40]}; the model's item ids are {want}",
                             "wrong_type")
    m = doc.get("m", 200)
    if not isinstance(m, int) or isinstance(m, bool):
        raise BadRequest(422, f"{where}: 'm' must be an integer", "wrong_type")
    top = min(n_items, MAX_M)
    if not 1 <= m <= top:
        raise BadRequest(422, f"{where}: 'm' must be between 1 and {top}, got {m}", "m_out_of_range")
    exclude = doc.get("exclude_history", True)
    if not isinstance(exclude, bool):
        raise BadRequest(422, f"{where}: 'exclude_history' must be true or false", "wrong_type")
    return Query(tuple(history), m, exclude)


__all__ = ["Query", "Limits", "BadRequest", "parse", "json_object", "reload_path", "MAX_M"]
