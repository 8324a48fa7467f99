"""The control API: every tunable parameter of a running router, by name, validated.

A parameter is a name, a type with its allowed range, and a getter/setter
pair bound to the live object it tunes.  `set` validates first and refuses
with the allowed range, leaving the old value in place; a successful change
is applied at once (the next event sees it) and reported to listeners, which
is how the dashboard keeps its audit log.
"""

from __future__ import annotations

import math
import reprlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gnurouter.config import NUMERIC_KINDS, ConfigError, RouterConfig, parse_duration

#: Longest text accepted as a number ("0.000000001s" and the like fit many times over).
MAX_NUMBER_TEXT = 64

# Values come from strangers over HTTP: an error message quotes at most this much
# of one, however long or deeply nested it is.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 2
_SHOWN.maxstring = 60
_SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = 4


class ControlError(ValueError):
    """A refused change; the message names the parameter and the allowed values."""


def shown(value: object) -> str:
    """`repr(value)` cut short, for error messages; never raises.

    Plain repr() is unusable on hostile input: an int past 4300 digits raises
    ValueError (sys.get_int_max_str_digits) and a list nested 20,000 deep
    raises RecursionError, either of which would replace the ControlError.
    """
    try:
        return _SHOWN.repr(value)
    except (ValueError, RecursionError):
        if isinstance(value, int):
            return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
        return f"<a {type(value).__name__}>"


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
    #: The router option (gnurouter.config) this parameter tunes live, if any.
    setting: str | None = None

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

    def coerce(self, value: object) -> Any:
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
            raise self._refuse(value)
        if self.kind == "choice":
            # `in` on a tuple of str compares with ==: safe for any value, hashable or not.
            if isinstance(value, str) and value in self.choices:
                return value
            raise self._refuse(value)
        if self.kind not in NUMERIC_KINDS:
            raise ControlError(f"{self.name}: parameter of unknown kind {self.kind!r}")
        # Only numbers and their spelling as text: True is an int to Python but
        # never a thread count, and a list or dict is never a number.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._refuse(value)
        # No setting needs more characters than this; int() of a long digit string
        # costs quadratic time wherever sys.set_int_max_str_digits lifted the limit.
        if isinstance(value, str) and len(value) > MAX_NUMBER_TEXT:
            raise self._refuse(value)
        number: float
        try:
            if self.kind == "duration":
                number = parse_duration(value, name=self.name)
            elif self.kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError  # also NaN and +-inf, which are not integers either
                number = int(value)  # ValueError for "1.5", "nan" and str past 4300 digits
            else:
                number = float(value)  # accepts "nan"/"inf": caught by the finite check below
        except (ValueError, TypeError, OverflowError, ConfigError) as error:
            # OverflowError: float() of an int past ~1e308, or parse_duration of one.
            raise self._refuse(value) from error
        # NaN compares False with everything, so it would slip through the range
        # check below; inf passes wherever a bound is missing.  Neither is ever a
        # usable setting (NaN query_delay stalls routing, NaN route_ttl empties the table).
        # (An int is always finite, and math.isfinite() overflows on a huge one.)
        if isinstance(number, float) and not math.isfinite(number):
            raise ControlError(
                f"{self.name}: {shown(value)} is not a finite number; allowed: {self.allowed()}"
            )
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise ControlError(
                f"{self.name}: {shown(value)} is outside the allowed range; "
                f"allowed: {self.allowed()}"
            )
        return number

    def _refuse(self, value: object) -> ControlError:
        return ControlError(
            f"{self.name}: {shown(value)} is not allowed; allowed: {self.allowed()}"
        )

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
            "setting": self.setting,
        }


def setting_parameter(
    name: str,
    setting: str,
    get: Callable[[], Any],
    set: Callable[[Any], None],
    *,
    high: float | None = None,
) -> Parameter:
    """A parameter for the router option `setting`: its kind, range and words come from
    RouterConfig's declaration, so the control API and the config file agree.

    `high` narrows the range where the live object allows less (a thread pool's size).
    """
    declared = RouterConfig.setting(setting)
    kind = declared.kind if declared.kind in (*NUMERIC_KINDS, "bool", "choice") else "str"
    return Parameter(
        name,
        kind,
        get,
        set,
        declared.help,
        low=declared.low,
        high=declared.high if high is None else min(high, declared.high or high),
        choices=declared.choices,
        nullable=declared.nullable,
        setting=setting,
    )


def attribute_parameter(
    name: str, setting: str, owner: object, attribute: str, *, high: float | None = None
) -> Parameter:
    """`setting_parameter` reading and writing one attribute of a live object."""
    return setting_parameter(
        name,
        setting,
        lambda: getattr(owner, attribute),
        lambda value: setattr(owner, attribute, value),
        high=high,
    )


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
            raise ControlError(f"unknown parameter {shown(name)}") from None

    def set(self, name: str, value: object) -> tuple[Any, Any]:
        """Change one parameter; returns (old, new).  Raises ControlError, changing nothing."""
        return self.set_many({name: value})[name]

    def set_many(self, changes: Mapping[str, object]) -> dict[str, tuple[Any, Any]]:
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
