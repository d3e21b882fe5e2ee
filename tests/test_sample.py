"""The bundled sample dumps are real MediaWiki XML exports, checked with xml.etree alone.

Nothing here uses the project's extractor: these tests pin down the sample itself (format,
siteinfo, ids, redirects, the shared entity list) so that extractor tests can rely on it.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "data_prep" / "sample"
LANGS = ("en", "de", "ru", "ja", "zh", "ar", "th")
NS = "{http://www.mediawiki.org/xml/export-0.11/}"

# The wiki's real localised names for File (6), Template (10) and Category (14).
LOCAL_NAMES = {
    "en": ("File", "Template", "Category"),
    "de": ("Datei", "Vorlage", "Kategorie"),
    "ru": ("Файл", "Шаблон", "Категория"),
    "ja": ("ファイル", "Template", "Category"),
    "zh": ("File", "Template", "Category"),
    "ar": ("ملف", "قالب", "تصنيف"),
    "th": ("ไฟล์", "แม่แบบ", "หมวดหมู่"),
}
DISAMBIG_TEMPLATE = {"en": "{{disambiguation}}", "de": "{{Begriffsklärung}}", "ru": "{{неоднозначность}}",
                     "ja": "{{Aimai}}", "zh": "{{disambig}}", "ar": "{{توضيح}}", "th": "{{แก้กำกวม}}"}
# Category/file prefixes (localised or an alias) that each language's articles must use in wikitext.
PREFIXES_USED = {
    "en": ["[[File:", "[[Image:", "[[Category:"],
    "de": ["[[Datei:", "[[Bild:", "[[Kategorie:"],
    "ru": ["[[Файл:", "[[Категория:"],
    "ja": ["[[ファイル:", "[[画像:", "[[File:", "[[Category:", "[[カテゴリ:"],
    "zh": ["[[文件:", "[[File:", "[[Image:", "[[Category:", "[[分类:", "[[分類:"],
    "ar": ["[[ملف:", "[[صورة:", "[[تصنيف:"],
    "th": ["[[ไฟล์:", "[[File:", "[[หมวดหมู่:"],
}


def dump_path(lang: str) -> Path:
    return SAMPLE / "dumps" / f"{lang}wiki-20261101-pages-articles.xml"


@cache
def parse(lang: str) -> ET.Element:
    return ET.parse(dump_path(lang)).getroot()


@cache
def pages(lang: str) -> list[dict]:
    out = []
    for page in parse(lang).iter(f"{NS}page"):
        rev = page.find(f"{NS}revision")
        text_el = rev.find(f"{NS}text")
        redirect = page.find(f"{NS}redirect")
        out.append({
            "title": page.findtext(f"{NS}title"),
            "ns": int(page.findtext(f"{NS}ns")),
            "id": int(page.findtext(f"{NS}id")),
            "redirect": None if redirect is None else redirect.get("title"),
            "rev": rev,
            "text_el": text_el,
            "text": text_el.text or "",
        })
    return out


@cache
def articles(lang: str) -> dict[str, dict]:
    return {p["title"]: p for p in pages(lang) if p["ns"] == 0 and p["redirect"] is None}


def read_entities() -> list[dict[str, str]]:
    with open(SAMPLE / "entities.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def base36_sha1(text: str) -> str:
    n = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest(), "big")
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[r])
    return "".join(reversed(digits)).rjust(31, "0")


@pytest.mark.parametrize("lang", LANGS)
def test_header_and_siteinfo(lang):
    root = parse(lang)
    assert root.tag == f"{NS}mediawiki"
    assert root.get("version") == "0.11"
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == lang
    site = root.find(f"{NS}siteinfo")
    assert site.findtext(f"{NS}dbname") == f"{lang}wiki"
    assert site.findtext(f"{NS}case") == "first-letter"
    assert site.findtext(f"{NS}base").startswith(f"https://{lang}.wikipedia.org/wiki/")
    assert re.fullmatch(r"MediaWiki 1\.\d+\.\d+-wmf\.\d+", site.findtext(f"{NS}generator"))
    assert site.findtext(f"{NS}sitename")
    names = {int(n.get("key")): (n.text or "") for n in site.find(f"{NS}namespaces")}
    assert names[0] == "" and {-2, -1, 1, 2, 4, 6, 10, 14, 828} <= names.keys()
    assert (names[6], names[10], names[14]) == LOCAL_NAMES[lang]
    assert all(n.get("case") == "first-letter" for n in site.find(f"{NS}namespaces"))


@pytest.mark.parametrize("lang", LANGS)
def test_pages_look_like_a_real_export(lang):
    all_pages = pages(lang)
    ids = [p["id"] for p in all_pages]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert len({p["title"] for p in all_pages}) == len(all_pages)
    rev_ids = set()
    for p in all_pages:
        rev = p["rev"]
        rev_id = int(rev.findtext(f"{NS}id"))
        rev_ids.add(rev_id)
        assert int(rev.findtext(f"{NS}parentid")) < rev_id
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rev.findtext(f"{NS}timestamp"))
        contributor = rev.find(f"{NS}contributor")
        assert contributor.findtext(f"{NS}username") and contributor.findtext(f"{NS}id").isdigit()
        assert rev.findtext(f"{NS}origin") == str(rev_id)
        assert rev.findtext(f"{NS}model") == "wikitext"
        assert rev.findtext(f"{NS}format") == "text/x-wiki"
        text_el = p["text_el"]
        assert text_el.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"
        # bytes is the UTF-8 length of the unescaped text; sha1 is base-36 as MediaWiki stores it.
        assert int(text_el.get("bytes")) == len(p["text"].encode("utf-8")), p["title"]
        assert text_el.get("sha1") == rev.findtext(f"{NS}sha1") == base36_sha1(p["text"])
    assert len(rev_ids) == len(all_pages)
    assert dump_path(lang).stat().st_size < 100_000


@pytest.mark.parametrize("lang", LANGS)
def test_articles_redirects_and_other_namespaces(lang):
    all_pages = pages(lang)
    arts = articles(lang)
    real = [t for t, p in arts.items() if DISAMBIG_TEMPLATE[lang] not in p["text"]]
    assert len(real) >= 20
    # Every article has prose of its own, with several links.
    for title in real:
        assert arts[title]["text"].count("[[") >= 3, title
    # One disambiguation page with the wiki's own template.
    assert sum(DISAMBIG_TEMPLATE[lang] in p["text"] for p in arts.values()) == 1
    # Pages a corpus must skip: talk, project, file, template and category pages.
    assert {1, 4, 6, 10, 14} <= {p["ns"] for p in all_pages}
    for p in all_pages:
        if p["ns"] != 0:
            prefix = p["title"].split(":", 1)[0]
            names = {int(n.get("key")): n.text for n in parse(lang).find(f"{NS}siteinfo/{NS}namespaces")}
            assert prefix == names[p["ns"]], p["title"]


@pytest.mark.parametrize("lang", LANGS)
def test_redirect_chain_and_unnormalised_targets(lang):
    redirects = {p["title"]: p for p in pages(lang) if p["redirect"] is not None}
    arts = articles(lang)
    assert len(redirects) >= 5
    for p in redirects.values():
        # The wikitext starts with a redirect magic word whose target the <redirect> element
        # holds in normalised form (spaces, upper-case first letter, no #fragment).
        m = re.match(r"#[^\s\[]+\s*\[\[([^\]|]+)\]\]", p["text"])
        assert m, p["title"]
        raw = m.group(1)
        normalised = raw.split("#")[0].replace("_", " ").strip()
        assert p["redirect"] == normalised[:1].upper() + normalised[1:]
        assert p["redirect"] in arts or p["redirect"] in redirects, p["title"]
    chains = [t for t, p in redirects.items() if p["redirect"] in redirects
              and redirects[p["redirect"]]["redirect"] in arts]
    assert chains, "no redirect chain A -> B -> article"
    raw_targets = [re.match(r"#[^\s\[]+\s*\[\[([^\]|]+)", p["text"]).group(1) for p in redirects.values()]
    assert any("_" in t or t[:1] != t[:1].upper() or "#" in t for t in raw_targets)
    if lang not in ("ja", "zh"):  # no letter case or word spaces to play with in titles there
        assert any("_" in t for t in raw_targets)


@pytest.mark.parametrize("lang", LANGS)
def test_wikitext_features(lang):
    texts = [p["text"] for p in articles(lang).values()]
    whole = "\n".join(texts)
    for prefix in PREFIXES_USED[lang]:
        assert prefix in whole, prefix
    for feature in ("<ref", "<ref name=", "/>", "{{nowrap|", "{{lang", '{| class="wikitable"', "<gallery>",
                    "<math>", "&nbsp;", "&ndash;", "[https://", "[[wikt:", "[[commons:", "== ", "'''", "''",
                    "<!--", "\n* ", "\n# ", "<br />", "<small>", "<sup>", "<span "):
        assert feature in whole, feature
    assert re.search(r"\[\[[^\]]+\|(thumb|mini|мини|サムネイル|تصغير)\|", whole), "no thumbnail with a caption"
    assert re.search(r"\[\[[^\]|#]+#[^\]|]+\|", whole), "no [[Target#Section|label]] link"
    assert re.search(r"\{\{lang\|[a-z]+\|[^{}]*\[\[", whole), "no {{lang|xx|...}} with a link inside"
    assert re.search(r"\n\[\[(fr|en|de|ja|ru|zh|ar|th):[^\]]+\]\]", whole), "no interlanguage link"
    # Infobox-style template spanning lines with links inside its parameters.
    assert re.search(r"\{\{[^{}|]+\n\s*\|[^{}]*\[\[", whole)


def test_entities_tsv_matches_the_dumps():
    rows = read_entities()
    assert rows and list(rows[0].keys()) == ["qid", "lang", "title"]
    by_qid: dict[str, set[str]] = defaultdict(set)
    seen = set()
    for row in rows:
        assert re.fullmatch(r"Q[1-9]\d*", row["qid"]), row
        assert row["lang"] in LANGS and dump_path(row["lang"]).exists(), row
        assert row["title"] in articles(row["lang"]), row
        assert (row["qid"], row["lang"]) not in seen, row
        seen.add((row["qid"], row["lang"]))
        by_qid[row["qid"]].add(row["lang"])
    # A title belongs to one entity only.
    assert len({(r["lang"], r["title"]) for r in rows}) == len(rows)
    assert len(by_qid) >= 30
    counts = sorted(len(langs) for langs in by_qid.values())
    assert counts.count(7) >= 10 and 1 in counts and 2 in counts and 3 in counts
    # The anchors of the sample's cross-language entities.
    assert by_qid["Q1490"] == set(LANGS) and by_qid["Q2"] == set(LANGS)
    assert {(r["lang"], r["title"]) for r in rows if r["qid"] == "Q1490"} >= {("en", "Tokyo"), ("ja", "東京都")}


def test_entities_are_linked_across_languages():
    """Every entity is the target of at least one link in its own language (so it gets counted)."""
    for lang in LANGS:
        linked = set()
        for p in articles(lang).values():
            for m in re.finditer(r"\[\[([^\]|#]+)", p["text"]):
                t = m.group(1).replace("_", " ").strip()
                linked.add(t[:1].upper() + t[1:])
        for row in read_entities():
            if row["lang"] == lang:
                assert row["title"] in linked, row


def test_dumps_are_built_from_their_sources():
    spec = importlib.util.spec_from_file_location("build_dumps", SAMPLE / "build_dumps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for lang in LANGS:
        assert module.build(lang) == dump_path(lang).read_text(encoding="utf-8"), lang


@pytest.mark.parametrize("lang", LANGS)
def test_multistream_copies_hold_the_same_pages(lang):
    """The committed multistream .xml.bz2 must not go stale when the plain dump is rebuilt."""
    multistream = SAMPLE / "dumps" / f"{lang}wiki-20261101-pages-articles-multistream.xml.bz2"
    if not multistream.exists():
        pytest.skip("no multistream copy generated yet")
    page_re = re.compile(r"<page>.*?</page>", re.S)
    plain = page_re.findall(dump_path(lang).read_text(encoding="utf-8"))
    packed = page_re.findall(bz2.decompress(multistream.read_bytes()).decode("utf-8"))
    assert packed == plain, "rebuild with: python -m data_prep make-multistream --dump ... --out-dir ..."
