"""Build the bundled sample dumps from their wikitext sources.

    python data_prep/sample/build_dumps.py            # rewrite dumps/*.xml
    python data_prep/sample/build_dumps.py --check    # exit 1 if a dump is stale

The article texts live in ``pages/{lang}.wiki`` (written by this project, not copied from
Wikipedia) so that they can be read and edited as plain wikitext; this script wraps them in the
real MediaWiki XML export format (schema 0.11) with the wiki's localised ``<siteinfo>``, page and
revision ids, contributors, ``bytes`` and base-36 ``sha1`` exactly as a Wikimedia dump carries them.

Source format: a line ``@@ NS TITLE`` starts a page (NS is the namespace number); everything up to
the next ``@@`` line is its wikitext (trailing whitespace trimmed, as MediaWiki stores it). A page
whose text starts with the wiki's redirect magic word gets a ``<redirect title="..."/>`` element
holding the normalised target, as in real dumps. The output is a pure function of the sources.

Page ids follow the order of pages in a source file: append new pages at the end so that existing
ids (used by interwiki/*page_props.sql.gz) stay put. After a change, also regenerate the multistream
copies (``python -m data_prep make-multistream --dump dumps/X.xml --out-dir dumps``) and the interwiki
sources (``make_interwiki_sources.py``); tests/test_sample.py checks the multistream copies are in sync.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
DUMP_DATE = "20261101"
LANGS = ("en", "de", "ru", "ja", "zh", "ar", "th")

# Real localised namespace names of each wiki (key -> name), as its siteinfo lists them.
_COMMON_TAIL = {710: "TimedText", 711: "TimedText talk"}
NAMESPACES: dict[str, dict[int, str]] = {
    "en": {
        -2: "Media", -1: "Special", 0: "", 1: "Talk", 2: "User", 3: "User talk", 4: "Wikipedia",
        5: "Wikipedia talk", 6: "File", 7: "File talk", 8: "MediaWiki", 9: "MediaWiki talk",
        10: "Template", 11: "Template talk", 12: "Help", 13: "Help talk", 14: "Category",
        15: "Category talk", 100: "Portal", 101: "Portal talk", 118: "Draft", 119: "Draft talk",
        126: "MOS", 127: "MOS talk", **_COMMON_TAIL, 828: "Module", 829: "Module talk",
    },
    "de": {
        -2: "Medium", -1: "Spezial", 0: "", 1: "Diskussion", 2: "Benutzer", 3: "Benutzer Diskussion",
        4: "Wikipedia", 5: "Wikipedia Diskussion", 6: "Datei", 7: "Datei Diskussion", 8: "MediaWiki",
        9: "MediaWiki Diskussion", 10: "Vorlage", 11: "Vorlage Diskussion", 12: "Hilfe",
        13: "Hilfe Diskussion", 14: "Kategorie", 15: "Kategorie Diskussion", 100: "Portal",
        101: "Portal Diskussion", **_COMMON_TAIL, 828: "Modul", 829: "Modul Diskussion",
    },
    "ru": {
        -2: "Медиа", -1: "Служебная", 0: "", 1: "Обсуждение", 2: "Участник", 3: "Обсуждение участника",
        4: "Википедия", 5: "Обсуждение Википедии", 6: "Файл", 7: "Обсуждение файла", 8: "MediaWiki",
        9: "Обсуждение MediaWiki", 10: "Шаблон", 11: "Обсуждение шаблона", 12: "Справка",
        13: "Обсуждение справки", 14: "Категория", 15: "Обсуждение категории", 100: "Портал",
        101: "Обсуждение портала", 102: "Инкубатор", 103: "Обсуждение Инкубатора", 104: "Проект",
        105: "Обсуждение проекта", 106: "Арбитраж", 107: "Обсуждение арбитража", **_COMMON_TAIL,
        828: "Модуль", 829: "Обсуждение модуля",
    },
    "ja": {
        -2: "メディア", -1: "特別", 0: "", 1: "ノート", 2: "利用者", 3: "利用者‐会話", 4: "Wikipedia",
        5: "Wikipedia‐ノート", 6: "ファイル", 7: "ファイル‐ノート", 8: "MediaWiki", 9: "MediaWiki‐ノート",
        10: "Template", 11: "Template‐ノート", 12: "Help", 13: "Help‐ノート", 14: "Category",
        15: "Category‐ノート", 100: "Portal", 101: "Portal‐ノート", 102: "プロジェクト",
        103: "プロジェクト‐ノート", **_COMMON_TAIL, 828: "モジュール", 829: "モジュール‐ノート",
    },
    "zh": {
        -2: "Media", -1: "Special", 0: "", 1: "Talk", 2: "User", 3: "User talk", 4: "Wikipedia",
        5: "Wikipedia talk", 6: "File", 7: "File talk", 8: "MediaWiki", 9: "MediaWiki talk",
        10: "Template", 11: "Template talk", 12: "Help", 13: "Help talk", 14: "Category",
        15: "Category talk", 100: "Portal", 101: "Portal talk", 102: "WikiProject",
        103: "WikiProject talk", 118: "Draft", 119: "Draft talk", **_COMMON_TAIL, 828: "Module",
        829: "Module talk",
    },
    "ar": {
        -2: "ميديا", -1: "خاص", 0: "", 1: "نقاش", 2: "مستخدم", 3: "نقاش المستخدم", 4: "ويكيبيديا",
        5: "نقاش ويكيبيديا", 6: "ملف", 7: "نقاش الملف", 8: "ميدياويكي", 9: "نقاش ميدياويكي",
        10: "قالب", 11: "نقاش القالب", 12: "مساعدة", 13: "نقاش المساعدة", 14: "تصنيف",
        15: "نقاش التصنيف", 100: "بوابة", 101: "نقاش البوابة", 118: "مسودة", 119: "نقاش المسودة",
        **_COMMON_TAIL, 828: "وحدة", 829: "نقاش الوحدة",
    },
    "th": {
        -2: "สื่อ", -1: "พิเศษ", 0: "", 1: "พูดคุย", 2: "ผู้ใช้", 3: "คุยกับผู้ใช้", 4: "วิกิพีเดีย",
        5: "คุยเรื่องวิกิพีเดีย", 6: "ไฟล์", 7: "คุยเรื่องไฟล์", 8: "มีเดียวิกิ", 9: "คุยเรื่องมีเดียวิกิ",
        10: "แม่แบบ", 11: "คุยเรื่องแม่แบบ", 12: "วิธีใช้", 13: "คุยเรื่องวิธีใช้", 14: "หมวดหมู่",
        15: "คุยเรื่องหมวดหมู่", 100: "สถานีย่อย", 101: "คุยเรื่องสถานีย่อย", **_COMMON_TAIL,
        828: "มอดูล", 829: "คุยเรื่องมอดูล",
    },
}

SITENAME = {"en": "Wikipedia", "de": "Wikipedia", "ru": "Википедия", "ja": "Wikipedia", "zh": "Wikipedia",
            "ar": "ويكيبيديا", "th": "วิกิพีเดีย"}
MAIN_PAGE = {"en": "Main_Page", "de": "Wikipedia:Hauptseite", "ru": "Заглавная_страница",
             "ja": "メインページ", "zh": "Wikipedia:首页", "ar": "الصفحة_الرئيسية", "th": "หน้าหลัก"}
# Redirect magic words (the English one works on every wiki).
REDIRECT_WORDS = {"en": ["#REDIRECT"], "de": ["#WEITERLEITUNG", "#REDIRECT"],
                  "ru": ["#ПЕРЕНАПРАВЛЕНИЕ", "#ПЕРЕНАПР", "#REDIRECT"], "ja": ["#転送", "#リダイレクト", "#REDIRECT"],
                  "zh": ["#重定向", "#REDIRECT"], "ar": ["#تحويل", "#REDIRECT"], "th": ["#เปลี่ยนทาง", "#REDIRECT"]}
GENERATOR = "MediaWiki 1.46.0-wmf.3"
CONTRIBUTORS = [("Sample editor", 48213), ("Kartograf", 1204771), ("StarGazer42", 339120),
                ("RiverBot", 5521094), ("Lektor", 77310)]
_PAGE_RE = re.compile(r"^@@ (-?\d+) (.+)$", re.M)


def sha1_base36(text: str) -> str:
    """Revision sha1 as MediaWiki stores it: base-36 of the SHA-1 of the UTF-8 text, 31 digits."""
    n = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(31, "0")


def _normalise_title(raw: str) -> str:
    title = raw.split("#", 1)[0].replace("_", " ").strip()
    title = re.sub(r" +", " ", title)
    return title[:1].upper() + title[1:]


def read_pages(lang: str) -> list[tuple[int, str, str]]:
    source = (HERE / "pages" / f"{lang}.wiki").read_text(encoding="utf-8")
    heads = list(_PAGE_RE.finditer(source))
    pages = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(source)
        pages.append((int(m.group(1)), m.group(2).strip(), source[m.end() + 1:end].rstrip()))
    return pages


def redirect_target(lang: str, text: str) -> str | None:
    words = "|".join(re.escape(w) for w in REDIRECT_WORDS[lang])
    m = re.match(rf"\s*(?:{words})\s*:?\s*\[\[([^\]|]+)", text, re.I)
    return _normalise_title(m.group(1)) if m else None


def _esc(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def build(lang: str) -> str:
    out = [
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ http://www.mediawiki.org/xml/export-0.11.xsd" '
        f'version="0.11" xml:lang="{lang}">',
        "  <siteinfo>",
        f"    <sitename>{_esc(SITENAME[lang])}</sitename>",
        f"    <dbname>{lang}wiki</dbname>",
        f"    <base>https://{lang}.wikipedia.org/wiki/{_esc(MAIN_PAGE[lang])}</base>",
        f"    <generator>{GENERATOR}</generator>",
        "    <case>first-letter</case>",
        "    <namespaces>",
    ]
    for key, name in sorted(NAMESPACES[lang].items()):
        if name:
            out.append(f'      <namespace key="{key}" case="first-letter">{_esc(name)}</namespace>')
        else:
            out.append(f'      <namespace key="{key}" case="first-letter" />')
    out += ["    </namespaces>", "  </siteinfo>"]
    # Ids: deterministic, sparse and increasing like a real wiki's (pages created over the years).
    lang_seed = LANGS.index(lang) + 1
    for i, (ns, title, text) in enumerate(read_pages(lang)):
        page_id = 10_000 * lang_seed + 37 * i + 5
        rev_id = 120_000_000 + 1_000_003 * lang_seed + 4211 * i
        user, user_id = CONTRIBUTORS[(i * 7 + lang_seed) % len(CONTRIBUTORS)]
        day, hour, minute = 1 + (i * 3) % 28, (i * 5 + lang_seed) % 24, (i * 13) % 60
        digest = sha1_base36(text)
        out += ["  <page>", f"    <title>{_esc(title)}</title>", f"    <ns>{ns}</ns>", f"    <id>{page_id}</id>"]
        target = redirect_target(lang, text) if ns == 0 else None
        if target is not None:
            out.append(f"    <redirect title={quoteattr(target)} />")
        out += [
            "    <revision>",
            f"      <id>{rev_id}</id>",
            f"      <parentid>{rev_id - 977 - i}</parentid>",
            f"      <timestamp>2026-{1 + i % 10:02d}-{day:02d}T{hour:02d}:{minute:02d}:{(i * 17) % 60:02d}Z</timestamp>",
            "      <contributor>",
            f"        <username>{_esc(user)}</username>",
            f"        <id>{user_id}</id>",
            "      </contributor>",
        ]
        if i % 4 == 1:
            out.append("      <minor />")
        out += [
            f"      <comment>{_esc('sample revision ' + str(i))}</comment>",
            f"      <origin>{rev_id}</origin>",
            "      <model>wikitext</model>",
            "      <format>text/x-wiki</format>",
            f'      <text bytes="{len(text.encode("utf-8"))}" sha1="{digest}" xml:space="preserve">{_esc(text)}</text>',
            f"      <sha1>{digest}</sha1>",
            "    </revision>",
            "  </page>",
        ]
    out.append("</mediawiki>")
    return "\n".join(out) + "\n"


def dump_path(lang: str) -> Path:
    return HERE / "dumps" / f"{lang}wiki-{DUMP_DATE}-pages-articles.xml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the dumps are up to date")
    parser.add_argument("--lang", action="append", choices=LANGS, help="only these languages")
    args = parser.parse_args(argv)
    stale = []
    for lang in args.lang or LANGS:
        if not (HERE / "pages" / f"{lang}.wiki").exists():
            continue
        xml = build(lang)
        path = dump_path(lang)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != xml:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(xml, encoding="utf-8")
            tmp.replace(path)
            print(f"{path.name}: {len(read_pages(lang))} pages, {len(xml.encode('utf-8'))} bytes")
    if stale:
        print("stale dumps (run data_prep/sample/build_dumps.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
