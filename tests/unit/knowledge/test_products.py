"""Every IG product in ig-products.yaml is recognised by name and by each of its codes."""

from __future__ import annotations

import pytest

from cds_service import knowledge

KN = knowledge.default()
INDEX = KN.product_index
PRODUCTS = KN.products.products
HCPCS = KN.systems["hcpcs"]
RXNORM = KN.systems["rxnorm"]


@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p.id)
def test_product_is_recognised_by_name(product: knowledge.Product) -> None:
    found = INDEX.identify([], [f"{product.name} immune globulin 10 g"])
    assert found is not None
    assert found.name == product.name


@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p.id)
def test_product_is_recognised_by_each_code(product: knowledge.Product) -> None:
    for ref in product.hcpcs:
        assert INDEX.identify([(HCPCS, ref.code)], []) is not None, ref.code
    for ref in product.rxnorm:
        assert INDEX.identify([(RXNORM, ref.code)], []) == product, ref.code
    for ref in product.ndc:
        # 10-digit labeler-product as listed, and an 11-digit package code with zero padding
        labeler, prod = ref.code.split("-")[:2]
        assert INDEX.identify([(knowledge.NDC_SYSTEM, f"{labeler}-{prod}-01")], []) == product
        padded = f"{labeler.zfill(5)}-{prod.zfill(4)}-01"
        assert INDEX.identify([(knowledge.NDC_SYSTEM, padded)], []) == product, padded


def test_shared_j_code_names_immune_globulin_not_a_brand() -> None:
    found = INDEX.identify([(HCPCS, "J1599")], [])
    assert found is knowledge.GENERIC


@pytest.mark.parametrize(
    "text",
    [
        "Hepatitis B immune globulin (human)",
        "RhoGAM Rho(D) immune globulin 300 mcg",
        "Varicella zoster immune globulin (VariZIG)",
        "GamaSTAN immune globulin intramuscular",
        "rabies immune globulin HyperRAB",
    ],
)
def test_hyperimmune_and_im_globulins_are_not_ig_replacement(text: str) -> None:
    assert INDEX.identify([], [text]) is None


@pytest.mark.parametrize("text", ["IVIG 10%", "immune globulin intravenous (human)", "SCIG"])
def test_generic_ig_names_are_recognised(text: str) -> None:
    assert INDEX.identify([], [text]) is not None


def test_concentrations_are_data_not_guesses() -> None:
    by_id = {p.id: p for p in PRODUCTS}
    assert by_id["hizentra"].concentration_g_per_ml == 0.2
    assert by_id["privigen"].concentration_g_per_ml == 0.1
    assert by_id["gammaplex"].concentration_g_per_ml is None  # 5% and 10% presentations
    assert all(
        p.concentration_g_per_ml is None or 0 < p.concentration_g_per_ml < 1 for p in PRODUCTS
    )


def test_verified_snomed_entries_match_and_unverified_do_not() -> None:
    snomed = KN.systems["snomed"]
    assert KN.vs("secondary-hiv").matches(snomed, "86406008")
    assert KN.vs("secondary-malignancy").matches(snomed, "92814006")  # CLL, verified in VSAC
    assert not KN.vs("pi-diagnosis").matches(snomed, "5908001")  # unverified CVID candidate
    assert not KN.vs("pi-diagnosis|medicare_bpm_ch15_50_6").matches(snomed, "234532001")
    assert KN.vs("pi-diagnosis|broad").matches(snomed, "234532001")


def test_remembered_answers_are_the_answers() -> None:
    """identify() remembers by (codings, texts): a second ask, and a fresh index, agree; a raw
    value that cannot be a key is answered (or refused) exactly as without the memory."""
    index = KN.product_index
    asks = [
        ((), ("Privigen 10% IV",)),
        ((("http://www.nlm.nih.gov/research/umls/rxnorm", "1234"),), ("rituximab",)),
        ((), ("HyperHEP B immune globulin",)),
        ((), ("immune globulin subcutaneous",)),
        ((), (None,)),
    ]
    first = [index.identify(c, t) for c, t in asks]
    again = [index.identify(list(c), list(t)) for c, t in asks]
    fresh = knowledge.ProductIndex(
        index.by_code, index.by_ndc, index.names, index.generic_names, index.excluded_names
    )
    assert first == again == [fresh.identify(c, t) for c, t in asks]
    names = [p.name if p else None for p in first]
    assert names == ["Privigen", None, None, knowledge.GENERIC.name, None]
    with pytest.raises(AttributeError):  # a list where a name belongs: as before, not a KeyError
        index.identify([], [["Privigen"]])
