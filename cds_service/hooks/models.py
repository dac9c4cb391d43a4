"""The CDS Hooks 2.0 response, typed with the specification's own names.

TypedDicts, not validating models: the cards are built once (cards.py, orderables.py, crd.py)
and serialised with orjson as they are, so a typed dict costs nothing per request, while
`mypy --strict` rejects a misspelt or missing field (`autoLaunchable`, a card without
`indicator`) where the card is written. What the service emits is still validated against the
CDS Hooks JSON Schemas and the R4B models in the tests (tests/support/cds_schemas.py).
Spec: https://cds-hooks.hl7.org/2.0/#cds-service-response
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Indicator = Literal["info", "warning", "critical"]
ActionType = Literal["create", "update", "delete"]
Resource = dict[str, Any]  # a FHIR resource, as JSON


class Coding(TypedDict):
    """A card's topic, an override reason (CDS Hooks Coding: `code` required)."""

    system: NotRequired[str]
    code: str
    display: NotRequired[str]


class Source(TypedDict):
    label: str
    url: NotRequired[str]
    icon: NotRequired[str]
    topic: NotRequired[Coding]


class Action(TypedDict):
    """A suggestion's action, or a systemAction (Da Vinci CRD: update of the draft order)."""

    type: ActionType
    description: str
    resource: NotRequired[Resource]
    resourceId: NotRequired[list[str]]


class Suggestion(TypedDict):
    label: str
    uuid: NotRequired[str]
    isRecommended: NotRequired[bool]
    actions: NotRequired[list[Action]]


class Link(TypedDict):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: NotRequired[str]
    autolaunchable: NotRequired[bool]


class Card(TypedDict):
    uuid: NotRequired[str]
    summary: str
    detail: NotRequired[str]
    indicator: Indicator
    source: Source
    suggestions: NotRequired[list[Suggestion]]
    selectionBehavior: NotRequired[Literal["at-most-one", "any"]]
    overrideReasons: NotRequired[list[Coding]]
    links: NotRequired[list[Link]]
    extension: NotRequired[dict[str, Any]]


class Response(TypedDict):
    """The body of a hook call's answer (an OPTIONAL array is omitted when empty)."""

    cards: list[Card]
    systemActions: NotRequired[list[Action]]
