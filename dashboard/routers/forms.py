"""Tuning forms built from what a router says about its parameters (GET /parameters).

Nothing here lists parameter names: every parameter a router exposes gets a
form from its description (kind, low/high, choices, nullable, allowed), so
parameters added to the router later appear by themselves.  A kind this code
does not know gets a text field and the router's own validation.

The form checks the range first so an obviously bad value never reaches the
router; the router validates again and has the last word.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from gnurouter.config import ConfigError, parse_duration


def _number_attrs(description: dict[str, Any], step: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"step": step}
    if description.get("low") is not None:
        attrs["min"] = description["low"]
    if description.get("high") is not None:
        attrs["max"] = description["high"]
    return attrs


def format_duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "" if seconds is None else str(seconds)
    if seconds and seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    return f"{seconds:g}s"


def display_value(description: dict[str, Any]) -> str:
    value = description.get("value")
    if value is None:
        return "unbounded" if description.get("nullable") else "—"
    if description.get("kind") == "duration":
        return format_duration(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class ParameterForm(forms.Form):
    """One parameter: `value` (typed by the parameter's kind) and, if nullable, `unbounded`."""

    parameter = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, description: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        self.description = description
        kind = description.get("kind")
        value = description.get("value")
        nullable = bool(description.get("nullable"))
        kwargs.setdefault("prefix", None)
        initial = {"parameter": description["name"]}
        if kind == "duration":
            initial["value"] = format_duration(value)
        elif kind == "bool":
            initial["value"] = "true" if value else "false"
        elif value is not None:
            initial["value"] = value
        if nullable:
            initial["unbounded"] = value is None
        kwargs.setdefault("initial", initial)
        super().__init__(*args, **kwargs)
        self.fields["value"] = self._value_field(description, required=not nullable)
        if nullable:
            self.fields["unbounded"] = forms.BooleanField(required=False, label="unbounded")
        self.fields["value"].help_text = f"allowed: {description.get('allowed', '?')}"

    @staticmethod
    def _value_field(description: dict[str, Any], *, required: bool) -> forms.Field:
        kind = description.get("kind")
        low, high = description.get("low"), description.get("high")
        label = "value"
        if kind == "int":
            return forms.IntegerField(
                label=label,
                required=required,
                min_value=None if low is None else int(low),
                max_value=None if high is None else int(high),
                widget=forms.NumberInput(attrs=_number_attrs(description, "1")),
            )
        if kind == "float":
            return forms.FloatField(
                label=label,
                required=required,
                min_value=low,
                max_value=high,
                widget=forms.NumberInput(attrs=_number_attrs(description, "any")),
            )
        if kind == "bool":
            return forms.ChoiceField(
                label=label, required=True, choices=[("true", "on"), ("false", "off")]
            )
        if kind == "choice":
            choices = [(c, c) for c in description.get("choices", [])]
            return forms.ChoiceField(label=label, required=required, choices=choices)
        # durations ("20ms", "2s") and kinds this dashboard does not know yet
        return forms.CharField(label=label, required=required, max_length=200)

    def clean_parameter(self) -> str:
        name = self.cleaned_data["parameter"]
        if name != self.description["name"]:
            raise ValidationError("the form does not match the parameter")
        return str(name)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        description = self.description
        if cleaned.get("unbounded"):
            cleaned["value"] = None
            self.errors.pop("value", None)
            return cleaned
        if "value" in self.errors:
            return cleaned
        value = cleaned.get("value")
        if value in (None, "") and description.get("nullable"):
            cleaned["value"] = None
            return cleaned
        if description.get("kind") == "duration":
            try:
                seconds = parse_duration(str(value), name=description["name"])
            except ConfigError as error:
                self.add_error("value", f"{error}; allowed: {description.get('allowed')}")
                return cleaned
            low, high = description.get("low"), description.get("high")
            if (low is not None and seconds < low) or (high is not None and seconds > high):
                self.add_error(
                    "value",
                    f"{value} is outside the allowed range; allowed: {description.get('allowed')}",
                )
            cleaned["value"] = seconds
        elif description.get("kind") == "bool":
            cleaned["value"] = value == "true"
        return cleaned

    def error_text(self) -> str:
        """All errors as one line, always ending with what is allowed."""
        messages: list[str] = []
        for field_errors in self.errors.values():
            messages.extend(str(message) for message in field_errors)
        text = "; ".join(messages) or "invalid value"
        allowed = f"allowed: {self.description.get('allowed', '?')}"
        return text if allowed in text else f"{text} ({allowed})"


def group_of(name: str) -> str:
    """Heading a parameter is listed under: 'stage router' for stage.router.threshold,
    'router' for router.max_ttl, 'general' for a name without dots."""
    parts = name.split(".")
    if len(parts) > 2:
        return f"{parts[0]} {parts[1]}"
    return parts[0] if len(parts) > 1 else "general"


def grouped_forms(descriptions: list[dict[str, Any]]) -> list[tuple[str, list[ParameterForm]]]:
    groups: dict[str, list[ParameterForm]] = {}
    for description in descriptions:
        groups.setdefault(group_of(description["name"]), []).append(ParameterForm(description))
    return list(groups.items())
