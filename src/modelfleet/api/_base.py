"""The base of every wire record, and the hub's error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ErrorBody", "ErrorDetail", "Free", "Record"]

#: A free-form object the hub passes through as given (assignment params, gates, strategy
#: options, a reference profile, a plan's targets): its keys are the caller's or the
#: feature's, so only "a mapping" is promised. Not ``JsonValue``: the hub builds some of these
#: from Python values (tuples, datetimes) that it serializes itself.
Free = dict[str, Any]


class Record(BaseModel):
    """A hub answer. Fields the hub adds later are kept (``extra="allow"``) rather than
    refused, so an older SDK keeps working against a newer hub; the documented fields are
    typed and validated."""

    model_config = ConfigDict(extra="allow")

    def __getitem__(self, key: str) -> Any:
        """``record["field"]``: any field the answer carried, declared or extra, by its wire
        name (KeyError for one it did not carry, as with the dict it was parsed from).

        Kept for code written against the dict answers HubClient returned before it was
        typed (and for extra fields, whose names only the hub knows); new code reads
        attributes, which mypy checks.
        """
        if key in type(self).model_fields and key in self.model_fields_set:
            return getattr(self, key)  # a field with a default the answer left out: absent
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """Like ``dict.get``: the field ``key`` if the answer has it, else ``default``."""
        try:
            return self[key]
        except KeyError:
            return default


class ErrorDetail(Record):
    code: str
    message: str


class ErrorBody(Record):
    """Every error answer: ``{"error": {"code": ..., "message": ...}}`` (see ``errors.py``)."""

    error: ErrorDetail
