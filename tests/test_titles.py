"""Title normalisation, namespace aliasing per language, interwiki prefixes and link trails."""

import pytest

from data_prep.pages.titles import LANGUAGES, TitleParser, link_trail_re, ucfirst

MLUKE_LANGUAGES = "ar bn de el en es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh".split()


def test_all_24_languages_have_tables():
    assert sorted(LANGUAGES) == sorted(MLUKE_LANGUAGES)
    for lang in MLUKE_LANGUAGES:
        p = TitleParser(lang)
        # every language knows its file and category namespaces, and the English canonical names
        assert p.parse("Category:X").kind == "category"
        assert p.parse("File:X.jpg").kind == "file"
        assert p.parse("Image:X.jpg").kind == "file"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("new_york  city", "New york city"),
        ("  Paris#History ", "Paris"),
        (":Paris", "Paris"),
        ("Caf%C3%A9", "Café"),
        ("%E6%9D%B1%E4%BA%AC", "東京"),
        ("AT&amp;T", "AT&T"),
        ("a&#95;b", "A b"),  # entity decoded first, then the underscore becomes a space
        ("Paris\u00a0France", "Paris France"),
        ("Star Wars: Episode I", "Star Wars: Episode I"),  # not a namespace prefix
        ("ßa", "ßa"),  # upper case of ß is two letters: MediaWiki leaves it
        ("e\u0301clair", "Éclair"),  # NFC first: e + combining acute -> é -> É
    ],
)
def test_normalize_en(raw, expected):
    assert TitleParser("en").normalize(raw) == expected


def test_unicode_first_letter_per_language():
    assert TitleParser("tr").normalize("istanbul") == "İstanbul"  # Turkish dotted capital
    assert TitleParser("en").normalize("istanbul") == "Istanbul"
    assert TitleParser("tr").normalize("ırmak") == "Irmak"  # dotless ı -> I
    assert TitleParser("ru").normalize("москва") == "Москва"
    assert TitleParser("ru").normalize("ёлка") == "Ёлка"
    assert TitleParser("el").normalize("αθήνα") == "Αθήνα"
    assert TitleParser("el").normalize("λόγος") == "Λόγος"  # final sigma inside the title stays
    assert ucfirst("ς", "el") == "Σ"


def test_case_sensitive_wiki_keeps_first_letter():
    assert TitleParser("en", case="case-sensitive").normalize("iPod_touch") == "iPod touch"
    assert TitleParser("en", case="first-letter").normalize("iPod_touch") == "IPod touch"


@pytest.mark.parametrize(
    "lang, raw, kind, title",
    [
        ("ru", "Категория:Города России", "category", "Категория:Города России"),
        ("ru", "category:Города", "category", "Категория:Города"),  # canonical English, any case
        ("ru", "Файл:Kremlin.jpg", "file", "Файл:Kremlin.jpg"),
        ("ru", "Изображение:Kremlin.jpg", "file", "Файл:Kremlin.jpg"),
        ("fr", "Fichier:Paris.jpg", "file", "Fichier:Paris.jpg"),
        ("fr", "Image:Paris.jpg", "file", "Fichier:Paris.jpg"),
        ("fr", "Catégorie:Ville", "category", "Catégorie:Ville"),
        ("de", "Bild:Berlin.jpg", "file", "Datei:Berlin.jpg"),
        ("de", "Kategorie:Stadt", "category", "Kategorie:Stadt"),
        ("ja", "ファイル:東京.jpg", "file", "ファイル:東京.jpg"),
        ("ja", "画像:東京.jpg", "file", "ファイル:東京.jpg"),
        ("ja", "カテゴリ:東京都", "category", "Category:東京都"),
        ("zh", "分類:城市", "category", "Category:城市"),
        ("zh", "文件:北京.jpg", "file", "File:北京.jpg"),
        ("ar", "تصنيف:مدن", "category", "تصنيف:مدن"),
        ("ar", "ملف:x.jpg", "file", "ملف:X.jpg"),
        ("th", "หมวดหมู่:เมือง", "category", "หมวดหมู่:เมือง"),
        ("en", "WP:NPOV", "namespace", "Wikipedia:NPOV"),
        ("en", "Talk:Paris", "namespace", "Talk:Paris"),
        ("en", " category : cities_of_France ", "category", "Category:Cities of France"),
        ("en", "Media:Sound.ogg", "media", "Media:Sound.ogg"),
    ],
)
def test_namespace_aliases(lang, raw, kind, title):
    t = TitleParser(lang).parse(raw)
    assert (t.kind, t.title) == (kind, title)


def test_siteinfo_names_extend_the_tables():
    p = TitleParser("xx", namespaces={14: "Kat", 6: "Bildo"})
    assert (p.parse("kat:foo").kind, p.parse("kat:foo").title) == ("category", "Kat:Foo")
    assert p.parse("Bildo:a.png").kind == "file"
    assert p.parse("Category:Foo").title == "Kat:Foo"  # canonical name maps onto the wiki's own


def test_interlanguage_interwiki_section_invalid():
    p = TitleParser("en")
    assert p.parse("fr:Paris").kind == "interlanguage"
    assert p.parse(":fr:Paris").kind == "interwiki"
    assert p.parse("wikt:dog").kind == "interwiki"
    assert p.parse("Commons:Main Page").kind == "interwiki"
    assert p.parse("#History").kind == "section"
    assert p.parse("").kind == "invalid"
    assert p.parse("Category:").kind == "invalid"
    assert p.parse("a[b").kind == "invalid"
    c = p.parse(":Category:Cities")
    assert (c.kind, c.colon, c.title) == ("category", True, "Category:Cities")


def test_link_trails():
    assert link_trail_re("en").match("s and").group() == "s"
    assert link_trail_re("en").match("és") is None  # English trail is ASCII only
    assert link_trail_re("de").match("äre x").group() == "äre"
    assert link_trail_re("ru").match("ой площади").group() == "ой"
    assert link_trail_re("fr").match("é,").group() == "é"
    for lang in ("ja", "zh", "th"):
        assert link_trail_re(lang) is None
