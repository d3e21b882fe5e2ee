"""Wikitext rendering: exact paragraph text and link spans for every feature (hand-checked)."""

import pytest

from data_prep.pages.titles import TitleParser
from data_prep.pages.wikitext import parse_wikitext


def render(wikitext: str, lang: str = "en"):
    """[(text, [(start, end, title, anchor), ...]), ...] — the anchor is text[start:end]."""
    page = parse_wikitext(wikitext, TitleParser(lang))
    return [(p.text, [(s, e, t, p.text[s:e]) for s, e, t in p.links]) for p in page.paragraphs]


def one(wikitext: str, lang: str = "en"):
    paras = render(wikitext, lang)
    assert len(paras) == 1, paras
    return paras[0]


# --- links and link trails --------------------------------------------------------------------------


def test_plain_and_piped_links():
    assert one("A [[dog]] barks.") == ("A dog barks.", [(2, 5, "Dog", "dog")])
    assert one("[[Paris|the capital]] is big") == ("the capital is big", [(0, 11, "Paris", "the capital")])
    assert one("[[New_York|NY]] and [[paris]]") == ("NY and paris", [(0, 2, "New York", "NY"), (7, 12, "Paris", "paris")])


def test_fragment_dropped_from_title():
    assert one("[[Paris#History|history]]") == ("history", [(0, 7, "Paris", "history")])


def test_link_trail_en_de_ru():
    assert one("A [[dog]]s life.") == ("A dogs life.", [(2, 6, "Dog", "dogs")])
    assert one("[[Cafe]]é") == ("Cafeé", [(0, 4, "Cafe", "Cafe")])  # é is not in the English trail
    assert one("Das [[Haus]]es Dach", "de") == ("Das Hauses Dach", [(4, 10, "Haus", "Hauses")])
    assert one("Die [[Stadt]]ämter", "de") == ("Die Stadtämter", [(4, 14, "Stadt", "Stadtämter")])
    assert one("в [[Москва|Москве]]ской области", "ru") == (
        "в Москвеской области",
        [(2, 12, "Москва", "Москвеской")],
    )
    # the trail applies inside formatting too, but not across it
    assert one("'''[[dog]]s'''") == ("dogs", [(0, 4, "Dog", "dogs")])
    assert one("[[dog]]'''s'''") == ("dogs", [(0, 3, "Dog", "dog")])


def test_no_link_trail_ja_zh_th():
    assert one("[[東京]]都に住む", "ja") == ("東京都に住む", [(0, 2, "東京", "東京")])
    assert one("[[北京]]市", "zh") == ("北京市", [(0, 2, "北京", "北京")])
    text, links = one("[[กรุงเทพ]]มหานคร", "th")
    assert text == "กรุงเทพมหานคร"
    assert links == [(0, len("กรุงเทพ"), "กรุงเทพ", "กรุงเทพ")]


def test_section_and_empty_targets_keep_text_only():
    assert one("See [[#History|below]].") == ("See below.", [])
    assert one("See [[#History]].") == ("See #History.", [])
    assert one("x [[:Category:Cities|cities]] y") == ("x cities y", [])


def test_category_file_interlanguage_links_removed():
    assert one("Text.[[Category:Cities|Sort key]] More.") == ("Text. More.", [])
    assert one("Город.[[Категория:Города России]]", "ru") == ("Город.", [])
    assert one("A [[File:X.jpg|thumb|A [[caption link]] here]] B") == ("A B", [])
    assert one("La [[Fichier:Paris.jpg|vignette|La [[tour Eiffel]]]] ville", "fr") == ("La ville", [])
    assert one("東京[[ファイル:東京.jpg|thumb|[[東京タワー]]]]と[[画像:x.png|説明]]大阪", "ja") == ("東京と大阪", [])
    assert one("Paris is nice.[[fr:Paris]][[de:Paris]]") == ("Paris is nice.", [])


def test_interwiki_and_other_namespaces_show_text_without_link():
    assert one("a [[wikt:dog|dog]] b") == ("a dog b", [])
    assert one("a [[:fr:Paris|Paris (fr)]] b") == ("a Paris (fr) b", [])
    assert one("per [[Wikipedia:Manual of Style|style]]") == ("per style", [])
    assert one("see [[WP:NPOV]]") == ("see WP:NPOV", [])


def test_titles_normalised_per_language():
    assert one("[[istanbul]]", "tr") == ("istanbul", [(0, 8, "İstanbul", "istanbul")])
    assert one("[[αθήνα]]", "el") == ("αθήνα", [(0, 5, "Αθήνα", "αθήνα")])


# --- templates --------------------------------------------------------------------------------------


def test_templates_removed():
    assert one("{{Infobox city|name=[[X]]|pop=5}}Text {{cite web|url=http://x|title=T}}here.") == ("Text here.", [])
    assert one("It is {{coord|35|N|139|E}} there{{efn|a [[note]]}}.") == ("It is there.", [])
    assert one("{{#if:x|[[Y]]}}Z") == ("Z", [])


def test_convert_shows_value_and_unit():
    assert one("It is {{convert|5|km|mi}} long.") == ("It is 5 km long.", [])
    assert one("From {{convert|5|to|8|km|abbr=on}} and {{cvt|3|-|4|m}}.") == ("From 5 to 8 km and 3–4 m.", [])
    assert one("x {{convert|{{#expr:2*3}}|km}} y") == ("x y", [])  # computed value: dropped


def test_inline_templates_keep_visible_text_and_links():
    assert one("{{nowrap|[[Paris]] France}} x") == ("Paris France x", [(0, 5, "Paris", "Paris")])
    assert one("in {{lang|fr|[[Paris|la ville]]}}") == ("in la ville", [(3, 11, "Paris", "la ville")])
    assert one("{{lang-fr|Paris}} is") == ("Paris is", [])
    assert one("[[Paris|{{nowrap|City of Light}}]]") == ("City of Light", [(0, 13, "Paris", "City of Light")])
    assert one("1990{{snd}}2000") == ("1990 – 2000", [])


# --- tags, markup, entities -------------------------------------------------------------------------


def test_references_removed():
    assert one("Fact.<ref>Source [[X]]</ref> More<ref name=a/>.") == ("Fact. More.", [])
    assert one('A<ref name="n">{{cite book|title=B}}</ref> [[C]]') == ("A C", [(2, 3, "C", "C")])


def test_tables_galleries_math_removed():
    assert render("Before\n{|\n| [[A]] || b\n|}\nAfter") == [("Before", []), ("After", [])]
    # a gallery is a block: the text on either side becomes two paragraphs
    assert render("x\n<gallery>\nFile:A.jpg|[[Link]]\n</gallery>\ny") == [("x", []), ("y", [])]
    assert one("Energy <math>E=mc^2</math> is") == ("Energy is", [])


def test_noinclude_shown_includeonly_hidden():
    assert one("a <noinclude>[[B]]</noinclude><includeonly>[[C]]</includeonly> d") == ("a B d", [(2, 3, "B", "B")])


def test_comments_removed():
    assert one("a<!-- hidden [[X]] -->b") == ("ab", [])
    assert one("[[Paris<!-- the city -->]] is") == ("Paris is", [(0, 5, "Paris", "Paris")])


def test_html_tags_keep_inner_text():
    assert one("<span style='x'>[[Paris]]</span> and <small>small</small> <b>bold</b>") == (
        "Paris and small bold",
        [(0, 5, "Paris", "Paris")],
    )
    assert one("a<br/>b") == ("a b", [])
    assert one("<nowiki>[[not a link]]</nowiki>") == ("[[not a link]]", [])


def test_bold_italic_removed():
    assert one("'''Bold''' and ''it [[X|y]]''") == ("Bold and it y", [(12, 13, "X", "y")])


def test_entities_unescaped():
    # a lone &nbsp; stays U+00A0 (what the reader sees); in a run of spaces it collapses
    assert one("A&nbsp;B &amp; C&#8211;D") == ("A\u00a0B & C–D", [])
    assert one("A &nbsp; B") == ("A B", [])


def test_external_links():
    assert one("[http://example.org Example site] and http://bare.org x [http://y.org]") == ("Example site and x", [])


def test_behaviour_switches_removed():
    assert one("__NOTOC__Text") == ("Text", [])


# --- paragraphs and whitespace ----------------------------------------------------------------------


def test_headings_start_a_paragraph_and_are_not_emitted():
    assert render("Intro.\n== History ==\nBody [[X]].") == [("Intro.", []), ("Body X.", [(5, 6, "X", "X")])]


def test_lists_one_paragraph_per_item():
    assert render("Intro:\n* one [[A]]\n* two\n# three\n;term\n: def\nAfter.") == [
        ("Intro:", []),
        ("one A", [(4, 5, "A", "A")]),
        ("two", []),
        ("three", []),
        ("term", []),
        ("def", []),
        ("After.", []),
    ]


def test_blank_lines_split_single_newlines_join():
    assert render("p1 [[A]]\nstill p1\n\np2 [[B]]") == [
        ("p1 A still p1", [(3, 4, "A", "A")]),
        ("p2 B", [(3, 4, "B", "B")]),
    ]


def test_whitespace_collapsed_and_spans_moved():
    assert one("  a   [[B|  b  c ]]   d\n e  ") == ("a b c d e", [(2, 5, "B", "b c")])
    assert one("x\t\t[[Y]]\u00a0\u00a0z") == ("x Y z", [(2, 3, "Y", "Y")])
    assert one("x\u00a0[[Y]]\u3000z\n[[W]]") == ("x\u00a0Y\u3000z W", [(2, 3, "Y", "Y"), (6, 7, "W", "W")])
    assert one("\u00a0[[Y]] z") == ("Y z", [(0, 1, "Y", "Y")])


# --- disambiguation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wikitext, lang",
    [
        ("'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n{{disambiguation}}", "en"),
        ("'''X''' may be:\n{{Dab|geo}}", "en"),
        ("'''Merkur''' steht für:\n{{Begriffsklärung}}", "de"),
        ("'''水星'''\n{{aimai}}", "ja"),
        ("'''Меркурий'''\n{{неоднозначность}}", "ru"),
        ("'''水星'''\n{{消歧义}}", "zh"),
        ("'''ดาวพุธ''' อาจหมายถึง\n{{แก้กำกวม}}", "th"),
        ("'''Mercurio'''\n{{Desambiguación}}", "es"),
        ("'''X'''\n__DISAMBIG__", "en"),
    ],
)
def test_disambiguation_recognised(wikitext, lang):
    assert parse_wikitext(wikitext, TitleParser(lang)).disambiguation


def test_ordinary_article_is_not_disambiguation():
    assert not parse_wikitext("'''Mercury''' is a planet. {{Infobox planet}}", TitleParser("en")).disambiguation


def test_span_invariants_on_random_wikitext():
    """Seeded random mixes of every construct: spans stay inside the text, ordered, non-empty and trimmed."""
    import random

    pieces = ["word ", "[[Link]]", "[[Target|shown text]]", "[[dog]]s ", "'''", "''", "{{nowrap|[[N]] x}}", "{{cite|a=b}}",
              "<ref>r [[R]]</ref>", "\n", "\n\n", "\n== H ==\n", "\n* ", "&nbsp;", "&amp;", "  ", "<span>", "</span>",
              "[[File:F.jpg|thumb|[[C]]]]", "[[Category:K]]", "{{lang|fr|[[L]]}}", "<!-- c -->", "[[", "]]", "{{", "}}",
              "[http://x.org label]", "{|\n| t\n|}\n", "<br/>", "é", "東京", "[[:Category:K|k]]", "[[#S|s]]", "\t"]
    rng = random.Random(1234)
    parser = TitleParser("en")
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        for p in parse_wikitext(text, parser).paragraphs:
            assert p.text == p.text.strip() and p.text
            prev = 0
            for s, e, title in p.links:
                assert prev <= s < e <= len(p.text), (text, p)
                assert not p.text[s].isspace() and not p.text[e - 1].isspace()
                assert title and "[" not in title and "|" not in title
                prev = e
