"""The control API: every tunable parameter of a running router, by name, validated.

A parameter is a name, a type with its allowed range, and a getter/setter
pair bound to the live object it tunes.  `set` validates first and refuses
with the allowed range, leaving the old value in place; a successful change
is applied at once (the next event sees it) and reported to listeners, which
is how the dashboard keeps its audit log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gnurouter.config import ConfigError, parse_duration


class ControlError(ValueError):
    """A refused change; the message names the parameter and the allowed values."""


@dataclass
class Parameter:
    name: str
    kind: str  # "int", "float", "duration", "bool", "choice"
    get: Callable[[], Any]
    set: Callable[[Any], None]
    description: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def allowed(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        elif self.kind == "duration":
            text = f"a duration from {self.low}s to {self.high}s (e.g. 20ms)"
        else:
            text = f"{self.kind} from {self._fmt(self.low)} to {self._fmt(self.high)}"
        return text + (" or null (unbounded)" if self.nullable else "")

    @staticmethod
    def _fmt(value: float | None) -> str:
        if value is None:
            return "?"
        return str(int(value)) if float(value).is_integer() else str(value)

    def coerce(self, value: Any) -> Any:
        """Validate `value` and return it in the parameter's own type."""
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none", "null")
        ):
            if self.nullable:
                return None
            raise ControlError(f"{self.name}: a value is required; allowed: {self.allowed()}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
                return value.lower() in ("true", "on", "1")
            raise ControlError(f"{self.name}: {value!r} is not allowed; allowed: {self.allowed()}")
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise ControlError(f"{self.name}: {value!r} is not allowed; allowed: {self.allowed()}")
        number: float
        try:
            if self.kind == "duration":
                number = parse_duration(value, name=self.name)
            elif self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                number = int(value)
            else:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
        except (ValueError, TypeError, ConfigError) as error:
            raise ControlError(
                f"{self.name}: {value!r} is not allowed; allowed: {self.allowed()}"
            ) from error
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise ControlError(
                f"{self.name}: {value!r} is outside the allowed range; allowed: {self.allowed()}"
            )
        return number

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "value": self.get(),
            "low": self.low,
            "high": self.high,
            "choices": list(self.choices),
            "nullable": self.nullable,
            "allowed": self.allowed(),
            "description": self.description,
        }


ChangeListener = Callable[[str, Any, Any], None]


class ControlAPI:
    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}
        self._listeners: list[ChangeListener] = []
        self._lock = threading.Lock()

    def register(self, parameter: Parameter) -> None:
        if parameter.name in self._parameters:
            raise ValueError(f"parameter {parameter.name!r} registered twice")
        self._parameters[parameter.name] = parameter

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def names(self) -> list[str]:
        return sorted(self._parameters)

    def get(self, name: str) -> Any:
        return self._lookup(name).get()

    def values(self) -> dict[str, Any]:
        return {name: self._parameters[name].get() for name in self.names()}

    def describe(self) -> list[dict[str, Any]]:
        return [self._parameters[name].describe() for name in self.names()]

    def _lookup(self, name: str) -> Parameter:
        try:
            return self._parameters[name]
        except KeyError:
            raise ControlError(f"unknown parameter {name!r}") from None

    def set(self, name: str, value: Any) -> tuple[Any, Any]:
        """Change one parameter; returns (old, new).  Raises ControlError, changing nothing."""
        return self.set_many({name: value})[name]

    def set_many(self, changes: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Validate every change first, then apply them all: all or nothing."""
        with self._lock:
            prepared = []
            for name, value in changes.items():
                parameter = self._lookup(name)
                prepared.append((parameter, parameter.coerce(value)))
            applied: dict[str, tuple[Any, Any]] = {}
            for parameter, new in prepared:
                old = parameter.get()
                parameter.set(new)
                applied[parameter.name] = (old, parameter.get())
        for name, (old, new) in applied.items():
            for listener in self._listeners:
                listener(name, old, new)
        return applied
