"""Clinical knowledge as versioned, cited data: value sets, IG products, policy criteria.

Loaded and checked once at start-up; a malformed file raises ``KnowledgeError`` naming the file and
field, so a bad deployment stops before it serves a single wrong answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from cds_service.knowledge.policy import Criteria, Params, PolicyFile, SourceRef

KNOWLEDGE_DIR = Path(__file__).parent


class KnowledgeError(RuntimeError):
    """A knowledge file is missing or malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Lenient(BaseModel):
    """Data files carry notes and provenance beyond what the rules read; those are kept, ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)


class CodeEntry(_Lenient):
    system: str
    code: str | None = None
    prefix: str | None = None
    display: str = ""
    verified: bool
    source: str = ""
    serotype_danish: str | None = None
    match_names: list[str] = []
    exclude: bool = False
    # causative drugs: at what exposure the cited source supports the drug as a cause
    exposure: Literal["deny", "corticosteroid", "review"] | None = None
    prednisone_equivalent: float | None = None  # mg prednisone per mg of this corticosteroid

    @field_validator("code", "prefix", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @model_validator(mode="after")
    def _one_of_code_prefix(self) -> CodeEntry:
        if self.code is not None and self.prefix is not None:
            raise ValueError("'code' and 'prefix' are mutually exclusive")
        if self.code is None and self.prefix is None and not self.match_names:
            raise ValueError("one of 'code', 'prefix' or 'match_names' is required")
        return self

    def flag(self, name: str) -> bool:
        extra = self.model_extra or {}
        return bool(extra.get(name))


class ValueSetFile(_Lenient):
    description: str
    source: str
    codes: list[CodeEntry]
    # further lists researched alongside the main one; only their verified entries are matched
    snomed: list[CodeEntry] = []
    icd_flags: list[CodeEntry] = []
    # older per-serotype LOINC codes (US numbering) still sent by some labs, with their Danish
    # serotype: matched like the main list when verified
    legacy_us_numbered_codes: list[CodeEntry] = []

    def matchable(self) -> list[CodeEntry]:
        """Entries a rule may match: the main list, plus verified SNOMED/ICD-flag/legacy entries."""
        extra = (*self.snomed, *self.icd_flags, *self.legacy_us_numbered_codes)
        return [*self.codes, *(e for e in extra if e.verified)]


class CodesFile(_Lenient):
    version: str
    systems: dict[str, str]
    valuesets: dict[str, ValueSetFile]


class CodeRef(_Lenient):
    code: str
    billing_unit_mg: int | None = None
    verified: bool = False

    @field_validator("code", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value)


class Product(_Lenient):
    name: str
    route: str
    id: str = ""
    hcpcs: list[CodeRef] = []
    ndc: list[CodeRef] = []
    rxnorm: list[CodeRef] = []
    scig_ivig_conversion_factor: float | None = None
    concentration_g_per_ml: float | None = None  # converts a dose ordered in mL to grams
    pi_indication: str | None = None
    pi_indication_note: str | None = None
    min_age_pi_years: int | None = None
    min_age_verified: bool = False

    @property
    def match_names(self) -> list[str]:
        """'Gammaplex (5% and 10%)' -> 'gammaplex'; 'Octagam 10%' keeps its strength."""
        base = self.name.split(" (")[0].strip().lower()
        return [base, base.split()[0]] if " " in base else [base]

    @property
    def primary_hcpcs(self) -> str | None:
        return self.hcpcs[0].code if self.hcpcs else None


class Ingredient(_Lenient):
    name: str
    rxnorm: list[CodeRef] = []
    match_names: list[str] = []


class ProductsFile(_Lenient):
    version: str
    ingredient: Ingredient
    products: list[Product]
    excluded_match_names: list[str] = []


class AgeBand(_Lenient):
    min_age_months: int
    max_age_months: int | None
    igg_lower_mg_dl: float


class IgGReferenceFile(_Lenient):
    version: str
    policy_source: str
    bands: list[AgeBand]

    @property
    def verified(self) -> bool:
        """True only when every band was checked against its source (the data says which)."""
        return all((b.model_extra or {}).get("verified") is True for b in self.bands)

    def lower_limit(self, age_months: int) -> float | None:
        """Lower reference limit (about mean - 2 SD) for an age, or None outside the table."""
        for band in self.bands:
            if age_months >= band.min_age_months and (
                band.max_age_months is None or age_months < band.max_age_months
            ):
                return band.igg_lower_mg_dl
        return None


@dataclass(frozen=True)
class ValueSet:
    """A compiled value set: exact (system, code) pairs plus ICD-10-CM-style prefixes."""

    id: str
    exact: frozenset[tuple[str, str]]
    prefixes: tuple[tuple[str, str], ...]
    serotypes: dict[tuple[str, str], str] = field(default_factory=dict)
    serotype_aliases: dict[str, str] = field(default_factory=dict)  # e.g. LOINC's 20A -> 20
    groups: dict[tuple[str, str], str] = field(default_factory=dict)  # e.g. D83.9 -> CVID
    # the cited display of each code (and prefix), for naming what was found in clinician words
    displays: dict[tuple[str, str], str] = field(default_factory=dict)
    # `prefixes` by system, in their order: one C-level str.startswith(tuple) per coding instead
    # of a Python loop over every prefix of every system (the rules' hottest look-up)
    by_system: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[str]] = {}
        for system, prefix in self.prefixes:
            grouped.setdefault(system, []).append(prefix)
        object.__setattr__(self, "by_system", {s: tuple(p) for s, p in grouped.items()})

    def display_for(self, system: str, code: str) -> str | None:
        """The display of the entry that matches (system, code): exact, else longest prefix."""
        hit = self.displays.get((system, code))
        if hit is not None:
            return hit
        best = max(
            (p for p in self.by_system.get(system, ()) if code.startswith(p)),
            key=len,
            default=None,
        )
        return None if best is None else self.displays.get((system, best))

    def matches(self, system: str | None, code: str | None) -> bool:
        if not system or not code:
            return False
        if (system, code) in self.exact:
            return True
        prefixes = self.by_system.get(system)
        return prefixes is not None and code.startswith(prefixes)

    def any_match(self, codings: Iterable[tuple[str | None, str | None]]) -> bool:
        # hot path (every coded resource, every rule): plain loop, prefixes only when there are any
        exact, by_system = self.exact, self.by_system
        for coding in codings:
            if coding in exact:
                return True
            if by_system:
                system, code = coding
                if system and code:
                    prefixes = by_system.get(system)
                    if prefixes is not None and code.startswith(prefixes):
                        return True
        return False

    def matching(
        self, codings: Collection[tuple[str | None, str | None]]
    ) -> set[tuple[str | None, str | None]]:
        """Those of `codings` (distinct) that `any_match` would match alone: exact codes by one
        C-level set intersection, prefixes only for the systems that have any."""
        found: set[tuple[str | None, str | None]] = set(self.exact.intersection(codings))
        by_system = self.by_system
        if by_system:
            for coding in codings:
                system, code = coding
                if system and code and coding not in found:
                    prefixes = by_system.get(system)
                    if prefixes is not None and code.startswith(prefixes):
                        found.add(coding)
        return found

    def union(self, *others: ValueSet) -> ValueSet:
        """One value set matching whatever any of these matches (for pre-filters)."""
        exact = self.exact.union(*(o.exact for o in others))
        prefixes = tuple(dict.fromkeys(self.prefixes + sum((o.prefixes for o in others), ())))
        return ValueSet("|".join((self.id, *(o.id for o in others))), exact, prefixes)

    def first_match(
        self, codings: Iterable[tuple[str | None, str | None]]
    ) -> tuple[str, str] | None:
        for s, c in codings:
            if s and c and self.matches(s, c):
                return (s, c)
        return None


@dataclass(frozen=True)
class DrugRule:
    """How one causative drug counts (codes.yaml causative-drugs): `deny` at any systemic
    exposure, `corticosteroid` only at the policy's dose and duration, `review` never alone."""

    name: str
    drug_class: str
    exposure: str
    prednisone_equivalent: float | None = None


@dataclass(frozen=True)
class Knowledge:
    """Everything the rules read, loaded once."""

    policy: PolicyFile
    systems: dict[str, str]
    valuesets: dict[str, ValueSet]
    products: ProductsFile
    igg_reference: IgGReferenceFile
    product_index: ProductIndex
    drug_names: tuple[str, ...] = ()  # lower-case causative-drug names, for text-only orders
    drug_rules: dict[str, DrugRule] = field(default_factory=dict)  # by code and lower-case name

    @property
    def policy_id(self) -> str:
        return f"{self.policy.id}@{self.policy.version}"

    def vs(self, vid: str) -> ValueSet:
        try:
            return self.valuesets[vid]
        except KeyError as exc:  # a policy naming a missing value set is a deployment error
            raise KnowledgeError(f"value set {vid!r} is not defined in codes.yaml") from exc

    @property
    def criteria(self) -> Criteria:
        """The policy's typed parameters, criterion by criterion."""
        return self.policy.criteria

    def rule(self, criterion: str) -> Params:
        return self.policy.params(criterion)

    def sources_for(self, criterion: str) -> list[SourceRef]:
        return [self.policy.sources[s] for s in self.policy.params(criterion).source]


def _load_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeError(f"{path}: cannot read: {exc}") from exc


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], path: Path) -> M:
    try:
        return model.model_validate(_load_yaml(path))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:3]
        ]
        raise KnowledgeError(f"{path.name}: {'; '.join(problems)}") from exc


def _compile(codes: CodesFile, flags: Iterable[str] = ()) -> dict[str, ValueSet]:
    """Compile every value set, plus 'id|flag' subsets (entries whose boolean flag is true)."""
    wanted: list[tuple[str, str, str | None]] = [(vid, vid, None) for vid in codes.valuesets]
    for ref in flags:
        base, _, wanted_flag = ref.partition("|")
        if base in codes.valuesets:
            wanted.append((ref, base, wanted_flag))
    return {key: _ValueSetParts(codes, vid).compile(key, flag) for key, vid, flag in wanted}


class _ValueSetParts:
    """One value set's entries gathered into the lookups a ValueSet answers from."""

    def __init__(self, codes: CodesFile, vid: str) -> None:
        self.codes, self.vid, self.vs = codes, vid, codes.valuesets[vid]
        self.extra = self.vs.model_extra or {}
        self.exact: set[tuple[str, str]] = set()
        self.prefixes: list[tuple[str, str]] = []
        self.serotypes: dict[tuple[str, str], str] = {}
        self.groups: dict[tuple[str, str], str] = {}
        self.displays: dict[tuple[str, str], str] = {}

    def compile(self, key: str, flag: str | None) -> ValueSet:
        # a value set may name which specimens it reads (titers: not the pre-vaccination
        # sample, not a post/pre ratio)
        specimens = self.extra.get("match_specimens")
        for entry in self.vs.matchable():
            if entry.exclude or (flag is not None and not entry.flag(flag)):
                continue
            specimen = (entry.model_extra or {}).get("specimen")
            if specimens and specimen is not None and specimen not in specimens:
                continue
            self._add(entry)
        aliases = {str(k): str(v) for k, v in (self.extra.get("serotype_aliases") or {}).items()}
        return ValueSet(
            key,
            frozenset(self.exact),
            tuple(self.prefixes),
            serotypes=self.serotypes,
            groups=self.groups,
            serotype_aliases=aliases,
            displays=self.displays,
        )

    def _system(self, entry: CodeEntry) -> str:
        try:
            return self.codes.systems[entry.system]
        except KeyError as exc:
            raise KnowledgeError(
                f"codes.yaml: valuesets.{self.vid}: unknown system alias {entry.system!r}"
            ) from exc

    def _add(self, entry: CodeEntry) -> None:
        system = self._system(entry)
        # ICD-10-CM is sent dotted (D83.9) by most EHRs and undotted (D839) by some
        # billing-derived feeds: both forms match
        undotted = system == self.codes.systems.get("icd10cm")

        def forms(code: str) -> tuple[str, ...]:
            return (code, code.replace(".", "")) if undotted and "." in code else (code,)

        for form in (entry.code, entry.prefix):
            if form is not None and entry.display:
                self.displays[(system, form)] = entry.display
                if undotted:
                    self.displays[(system, form.replace(".", ""))] = entry.display
        if entry.code is not None:
            self.exact.update((system, f) for f in forms(entry.code))
            if entry.serotype_danish:
                named = self.extra.get("serotype_aliases") or {}
                serotype = str(named.get(entry.serotype_danish, entry.serotype_danish))
                self.serotypes[(system, entry.code)] = serotype
            group = (entry.model_extra or {}).get("group")
            if isinstance(group, str):
                self.groups[(system, entry.code)] = group
        elif entry.prefix is not None:
            self.prefixes.extend((system, f) for f in forms(entry.prefix))


def _drug_rules(codes: CodesFile) -> tuple[dict[str, DrugRule], tuple[str, ...]]:
    """The causative-drug rules by 'system|code' and by lower-case name, and every drug name
    longest first (a name found in free text: the longest match wins)."""
    drugs = codes.valuesets.get("causative-drugs")
    entries = [e for e in (drugs.codes if drugs else []) if not e.exclude]
    rules: dict[str, DrugRule] = {}
    for entry in entries:
        if entry.exposure is None:
            raise KnowledgeError(f"codes.yaml: causative-drugs: {entry.display!r} has no exposure")
        if entry.exposure == "corticosteroid" and not entry.prednisone_equivalent:
            raise KnowledgeError(
                f"codes.yaml: causative-drugs: {entry.display!r} needs prednisone_equivalent"
            )
        extra = entry.model_extra or {}
        rule = DrugRule(
            entry.display,
            str(extra.get("drug_class", "")),
            entry.exposure,
            entry.prednisone_equivalent,
        )
        if entry.code is not None:
            rules[f"{codes.systems[entry.system]}|{entry.code}"] = rule
        for name in (entry.display, *entry.match_names):
            rules[name.lower()] = rule
    names = {n.lower() for c in entries for n in (c.display, *c.match_names) if n}
    return rules, tuple(sorted(names, key=len, reverse=True))


def load(directory: Path = KNOWLEDGE_DIR, policy_file: str = "policy-cvid-ig.yaml") -> Knowledge:
    """Load and cross-check the knowledge files; raises KnowledgeError on any defect."""
    policy = _parse(PolicyFile, directory / policy_file)
    codes = _parse(CodesFile, directory / "codes.yaml")
    products = _parse(ProductsFile, directory / "ig-products.yaml")
    reference = _parse(IgGReferenceFile, directory / "igg-reference-by-age.yaml")
    if reference.policy_source not in policy.sources:
        raise KnowledgeError(
            f"igg-reference-by-age.yaml: policy_source {reference.policy_source!r} unknown"
        )
    refs = [name for _, name in policy.valueset_refs()]
    valuesets = _compile(codes, [r for r in refs if "|" in r])
    index = ProductIndex.build(products, codes.systems)
    rules, drug_names = _drug_rules(codes)
    knowledge = Knowledge(
        policy, codes.systems, valuesets, products, reference, index, drug_names, rules
    )
    for where, name in policy.valueset_refs():
        if name not in valuesets:
            raise KnowledgeError(f"{policy_file}: {where}: unknown value set {name!r}")
    return knowledge


@cache
def default() -> Knowledge:
    """The packaged knowledge, loaded once per process."""
    return load()


def _digits(ndc: str) -> str:
    """NDC labeler-product without hyphens or zero padding differences (10 vs 11 digit forms)."""
    parts = ndc.split("-")
    return "-".join(p.lstrip("0") or "0" for p in parts[:2])


@dataclass(frozen=True)
class ProductIndex:
    """Look-up of IG products by code or name, built once from ig-products.yaml."""

    by_code: dict[tuple[str, str], Product]
    by_ndc: dict[str, Product]
    names: tuple[tuple[str, Product], ...]
    generic_names: tuple[str, ...]
    excluded_names: tuple[str, ...] = ()
    # identify()'s answers by (codings, texts): a record names the same few drugs on many
    # statements, administrations and dispenses, and an unknown one scans every name
    _seen: dict[tuple[Any, ...], Product | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, products: ProductsFile, systems: dict[str, str]) -> ProductIndex:
        hcpcs_owners: dict[str, list[Product]] = {}
        for p in products.products:
            for h in p.hcpcs:
                hcpcs_owners.setdefault(h.code, []).append(p)
        by_code: dict[tuple[str, str], Product] = {}
        by_ndc: dict[str, Product] = {}
        names: list[tuple[str, Product]] = []
        for code, owners in hcpcs_owners.items():
            # a J-code shared by several products (J1599 NOS) names immune globulin, not a brand
            by_code[(systems["hcpcs"], code)] = owners[0] if len(owners) == 1 else GENERIC
        for p in products.products:
            for rx in p.rxnorm:
                by_code[(systems["rxnorm"], rx.code)] = p
            for ndc in p.ndc:
                by_ndc[_digits(ndc.code)] = p
            names.extend((n, p) for n in p.match_names)
        names.sort(key=lambda item: -len(item[0]))  # "gammagard liquid" before "gammagard"
        for rx in products.ingredient.rxnorm:
            by_code[(systems["rxnorm"], rx.code)] = GENERIC
        generic = tuple(n.lower() for n in products.ingredient.match_names)
        excluded = tuple(n.lower() for n in products.excluded_match_names)
        return cls(by_code, by_ndc, tuple(names), generic, excluded)

    def identify(
        self, codings: Iterable[tuple[str | None, str | None]], texts: Iterable[str | None]
    ) -> Product | None:
        """The IG product a medication concept names, or None if it is not immune globulin."""
        codings, texts = tuple(codings), tuple(texts)
        try:
            return self._seen[(codings, texts)]
        except KeyError:
            pass
        except TypeError:  # an unhashable value read raw: no memory
            return self._identify(codings, texts)
        found = self._identify(codings, texts)
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen[(codings, texts)] = found
        return found

    def _identify(
        self, codings: tuple[tuple[str | None, str | None], ...], texts: tuple[str | None, ...]
    ) -> Product | None:
        for system, code in codings:
            if system and code:
                hit = self.by_code.get((system, code))
                if hit is not None:
                    return hit
                if system == NDC_SYSTEM:
                    hit = self.by_ndc.get(_digits(code))
                    if hit is not None:
                        return hit
        lowered = [t.lower() for t in texts if t]
        if any(x in text for text in lowered for x in self.excluded_names):
            return None  # a hyperimmune or intramuscular globulin, not IG replacement
        for text in lowered:
            for name, product in self.names:
                if name in text:
                    return product
        if any(g in text for text in lowered for g in self.generic_names):
            return GENERIC
        return None


_SEEN_LIMIT = 4096
NDC_SYSTEM = "http://hl7.org/fhir/sid/ndc"
GENERIC = Product(name="immune globulin", route="unknown")
