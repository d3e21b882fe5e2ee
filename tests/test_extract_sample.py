"""Extraction of the bundled sample checked against HAND-WRITTEN expectations.

The expected paragraphs below were written from the wikitext in data_prep/sample/pages/*.wiki by
reading it as a Wikipedia reader would see the rendered page (DESIGN.md, step 1), not by copying the
extractor's output: templates removed except the visible content of inline ones ({{nowrap}},
{{lang}}), <ref>s removed, bold/italic marks removed, HTML entities unescaped (&nbsp; is U+00A0),
file and category links leave no text, and a heading starts a new paragraph. Assumption: the heading
text itself is not kept as a paragraph, so the paragraph after "== Formation ==" is the second one.

Link markup inside the expected text: ⟦anchor⟧ is a link whose normalised target is the anchor
itself; ⟦anchor→Target⟧ a link to Target. The span of a link is exactly the anchor in the text,
including a MediaWiki link trail ([[planet]]s -> "planets" in en/de/ru, none in ja/zh/th). An
unpiped link shows its target as written ([[Solar_System]] reads "Solar_System") while its target is
normalised (underscores -> spaces, #fragment dropped, first letter upper-cased).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

extract_module = pytest.importorskip("data_prep.pages.extract")
pq = pytest.importorskip("pyarrow.parquet")

SAMPLE = Path(__file__).resolve().parents[1] / "data_prep" / "sample"
LANGS = ("en", "de", "ru", "ja", "zh", "ar", "th")
NS = "{http://www.mediawiki.org/xml/export-0.11/}"
NBSP = "\u00a0"

EXPECTED: dict[tuple[str, str], list[str]] = {
    ("en", "Tokyo"): [
        'Tokyo (東京, Tōkyō, "eastern capital") is the capital and largest city of ⟦Japan⟧. It lies on the'
        " eastern coast of ⟦Honshu⟧, at the head of ⟦Tokyo Bay⟧, and its metropolitan area is home to more"
        " people than any other on ⟦Earth⟧.",
        "The city was a small fishing town called ⟦Edo⟧ until the 17th century, when it became the seat of"
        " the ⟦Tokugawa shogunate⟧. In 1868 the imperial court moved there from ⟦Kyoto⟧ and the town was"
        " given its present name. Tokyo keeps close ties with ⟦Paris⟧, ⟦Beijing⟧ and"
        " ⟦the Russian capital→Moscow⟧.",
    ],
    ("en", "Moon"): [
        "The Moon is ⟦Earth⟧'s only natural ⟦satellite→Satellite⟧ and the fifth-largest of the"
        " ⟦natural satellites→Natural satellite⟧ in the ⟦Solar_System→Solar System⟧. It orbits at an average"
        f" distance of 384,400 km{NBSP}– about thirty times the width of the Earth.",
        f"Most ⟦planetary scientists→Planetary science⟧ think the Moon formed about 4.5{NBSP}billion years ago"
        " from debris thrown out when a body the size of ⟦Mars⟧ struck the young Earth. Its"
        " ⟦tidally locked→Orbit⟧ rotation means the same side always faces the ⟦home planet→Earth⟧.",
    ],
    ("en", "Paris"): [
        "Paris is the capital and most populous city of ⟦France⟧. It stands on the ⟦Seine⟧ river, in the"
        " north of the country, and has been one of the chief centres of European art, science and trade"
        " for centuries.",
        "The city is known for the ⟦Eiffel Tower⟧, the ⟦Louvre⟧ and its wide boulevards, laid out in the"
        " 19th century (under ⟦Napoleon III⟧). It is often called ⟦la Ville Lumière→City of Light⟧, and its"
        " people are known as"
        " Parisiens.",
    ],
    ("de", "Berlin"): [
        f"Berlin ist die Hauptstadt und mit rund 3,9{NBSP}Millionen Einwohnern die größte Stadt"
        " ⟦Deutschlands→Deutschland⟧. Die Stadt liegt an den ⟦Flüssen→Fluss⟧ ⟦Spree⟧ und ⟦Havel⟧ im"
        " Nordosten des Landes und ist zugleich ein eigenes ⟦Bundesland→Land (Deutschland)⟧.",
        "Von 1961 bis 1989 teilte die ⟦Berliner Mauer⟧ die Stadt in einen Ost- und einen Westteil. Seit der"
        " ⟦Wiedervereinigung→Deutsche Wiedervereinigung⟧ ist Berlin wieder Sitz von ⟦Bundestag⟧ und"
        " Bundesregierung.",
    ],
    ("de", "Sonne"): [
        "Die Sonne ist der ⟦Stern⟧ im Zentrum des ⟦Sonnensystems→Sonnensystem⟧. Um sie kreisen die ⟦Erde⟧"
        " und sieben weitere ⟦Planeten→Planet⟧ sowie zahllose ⟦Kleinkörper→Asteroid⟧.",
        "Im Kern der Sonne verschmilzt Wasserstoff bei etwa 15 Millionen Kelvin zu Helium. Die Energie, die"
        " dabei nach ⟦Albert Einsteins→Albert Einstein⟧ berühmter Formel frei wird, erreicht die Erde nach"
        " gut acht Minuten als ⟦Licht⟧ & Wärme.",
    ],
    ("ru", "Москва"): [
        "Москва\u0301 — ⟦столица→Столица⟧ и крупнейший город ⟦России→Россия⟧. Город стоит на"
        " ⟦Москве-реке→Москва (река)⟧ в центре ⟦Восточно-Европейской равнины→Восточно-Европейская равнина⟧.",
        "Впервые город упоминается в летописи под 1147 годом. С 1918 года Москва снова является столицей"
        " страны; прежде эту роль почти два века играл ⟦Санкт-Петербург⟧. Город поддерживает дружеские"
        " связи с ⟦Берлином→Берлин⟧, ⟦Пекином→Пекин⟧ и ⟦Токио⟧.",
    ],
    ("ru", "Луна"): [
        "Луна — единственный естественный ⟦спутник→Спутник⟧ ⟦Земли→Земля⟧ и пятый по величине спутник в"
        " ⟦Солнечной системе→Солнечная система⟧. Среднее расстояние между Луной и Землёй составляет"
        f" 384 400 км, то есть примерно 30{NBSP}диаметров Земли.",
        f"По наиболее распространённой гипотезе, Луна образовалась около 4,5{NBSP}млрд лет назад, когда с"
        " молодой Землёй столкнулось тело размером с ⟦Марс⟧. Вращение Луны"
        " ⟦синхронизировано→Приливный захват⟧ с её обращением, поэтому к Земле всегда обращена одна"
        " сторона, а обратную сторону впервые сфотографировала станция ⟦Луна-3⟧.",
    ],
    ("ja", "東京都"): [
        "東京都(とうきょうと)は、⟦日本⟧の⟦首都⟧であり、⟦関東地方⟧に位置する⟦都→都道府県⟧である。"
        "都内の人口は約1400万人で、周辺の県を含む⟦首都圏→首都圏 (日本)⟧は世界最大級の都市圏である。",
        "江戸時代には「⟦江戸⟧」と呼ばれ、⟦徳川幕府→江戸幕府⟧が置かれた。1868年に天皇が⟦京都→京都市⟧から移り、"
        "名称が東京と改められた。",
    ],
    ("ja", "月"): [
        "月(つき)は、⟦地球⟧の唯一の⟦自然衛星→衛星⟧である。⟦太陽系⟧の衛星の中では5番目に大きい。"
        "地球からの平均距離は384,400 kmである。",
        "月は約45億年前、⟦火星⟧ほどの大きさの天体が若い地球に衝突した際の破片から生まれたとする説が有力である。"
        "月は⟦自転と公転の周期が等しい→潮汐固定⟧ため、地球からは常に同じ面しか見えない。",
    ],
    ("zh", "北京市"): [
        "北京市，简称京，是⟦中华人民共和国⟧的⟦首都⟧，也是全国的政治与文化中心。全市常住人口约2185万人，"
        "位于⟦华北平原⟧的北端。",
        "北京有三千多年的建城史，⟦元朝⟧、⟦明朝⟧和⟦清朝⟧都曾在此定都。2008年，北京举办了"
        "⟦第29届夏季奥运会→2008年夏季奥林匹克运动会⟧；2022年又举办了冬奥会，成为首个“双奥之城”。",
    ],
    ("zh", "太阳"): [
        "太阳是位于⟦太阳系⟧中心的⟦恒星⟧，⟦地球⟧和其他⟦行星⟧都围绕它公转。太阳的直径约为139万公里，"
        "约是地球的109倍。",
        "太阳核心的温度约为1500万⟦开尔文⟧，氢在那里聚变为氦。根据⟦爱因斯坦→阿尔伯特·爱因斯坦⟧的质能方程，"
        "这一过程释放出巨大的能量，阳光约8分钟后抵达地球。",
    ],
    ("ar", "القاهرة"): [
        "القاهرة هي عاصمة ⟦مصر⟧ وأكبر مدنها، كما أنها من أكبر المدن في ⟦أفريقيا⟧ والعالم العربي. تقع"
        " المدينة على ضفاف ⟦نهر النيل⟧ قرب رأس الدلتا.",
        f"أسس ⟦الفاطميون→الدولة الفاطمية⟧ المدينة سنة 969{NBSP}م، ثم صارت مركزًا للعلم والتجارة. تقع"
        " ⟦أهرامات الجيزة⟧ على الطرف الغربي من المنطقة الحضرية، وتضم القاهرة القديمة مئات المساجد"
        " التاريخية.",
    ],
    ("ar", "الشمس"): [
        "الشمس هي ⟦النجم→نجم⟧ الذي يقع في مركز ⟦المجموعة الشمسية⟧، وتدور حولها ⟦الأرض⟧ وسائر"
        " ⟦الكواكب→كوكب⟧. يبلغ قطرها نحو 1.39 مليون كم، أي ما يعادل 109 أضعاف قطر الأرض.",
        "تبلغ حرارة قلب الشمس نحو 15 مليون ⟦كلفن⟧، وفيه يندمج الهيدروجين ليتحول إلى هيليوم. ووفقًا لمعادلة"
        " ⟦أينشتاين→ألبرت أينشتاين⟧ الشهيرة تتحول كتلة صغيرة إلى طاقة هائلة تصل إلى الأرض على شكل ضوء"
        " بعد نحو ثماني دقائق.",
    ],
    ("th", "กรุงเทพมหานคร"): [
        "กรุงเทพมหานคร เป็นเมืองหลวงและเมืองที่มีประชากรมากที่สุดของ⟦ประเทศไทย⟧ ตั้งอยู่บนฝั่งของ"
        "⟦แม่น้ำเจ้าพระยา⟧ ใกล้กับ⟦อ่าวไทย⟧",
        "กรุงเทพมหานครได้รับการสถาปนาเป็นราชธานีเมื่อ พ.ศ. 2325 ในสมัย"
        "⟦พระบาทสมเด็จพระพุทธยอดฟ้าจุฬาโลกมหาราช→รัชกาลที่ 1⟧ ชื่อเต็มของเมืองถือเป็นชื่อสถานที่ที่ยาวที่สุด"
        "แห่งหนึ่งของโลก",
    ],
    ("th", "ดวงจันทร์"): [
        "ดวงจันทร์ เป็น⟦ดาวบริวาร⟧ตามธรรมชาติเพียงดวงเดียวของ⟦โลก⟧ และมีขนาดใหญ่เป็นอันดับห้าในบรรดา"
        "ดาวบริวารของ⟦ระบบสุริยะ⟧ ระยะห่างเฉลี่ยจากโลกประมาณ 384,400 กิโลเมตร",
        "นักวิทยาศาสตร์ส่วนใหญ่เชื่อว่าดวงจันทร์เกิดขึ้นเมื่อราว 4,500 ล้านปีก่อน จากเศษซากที่กระเด็นออกมา"
        "เมื่อวัตถุขนาดเท่า⟦ดาวอังคาร⟧พุ่งชนโลกในยุคแรก ดวงจันทร์หันด้านเดียวเข้าหาโลกเสมอ เนื่องจาก"
        "⟦การหมุนรอบตัวเองสัมพันธ์กับการโคจร→การล็อกไทดัล⟧",
    ],
}

# Redirect pages of each sample, target normalised (underscores, lower-case first letter, #fragment).
EXPECTED_REDIRECTS: dict[str, set[tuple[str, str]]] = {
    "en": {("Tokyo Metropolis", "Tokyo"), ("Edo", "Tokyo Metropolis"), ("Einstein", "Albert Einstein"),
           ("Red Planet", "Mars"), ("People's Republic of China", "China"),
           ("PRC", "People's Republic of China")},
    "de": {("Bundeshauptstadt", "Berlin"), ("Hauptstadt Deutschlands", "Bundeshauptstadt"),
           ("Beijing", "Peking"), ("Einstein", "Albert Einstein"), ("China", "Volksrepublik China")},
    "ru": {("Первопрестольная", "Москва"), ("Белокаменная", "Первопрестольная"),
           ("Эйнштейн", "Эйнштейн, Альберт"), ("Ньютон", "Ньютон, Исаак"), ("КНР", "Китай")},
    "ja": {("東京", "東京都"), ("トウキョウ", "東京"), ("東京都庁", "東京都"),
           ("アインシュタイン", "アルベルト・アインシュタイン"), ("Tokyo", "東京都"), ("中国", "中華人民共和国")},
    "zh": {("东京", "东京都"), ("東京", "东京"), ("北京", "北京市"), ("爱因斯坦", "阿尔伯特·爱因斯坦"),
           ("中国", "中华人民共和国"), ("Peking", "北京")},
    "ar": {("مدينة القاهرة", "القاهرة"), ("قاهرة المعز", "مدينة القاهرة"), ("أينشتاين", "ألبرت أينشتاين"),
           ("النيل", "نهر النيل"), ("جمهورية الصين الشعبية", "الصين")},
    "th": {("กรุงเทพ", "กรุงเทพมหานคร"), ("บางกอก", "กรุงเทพ"), ("ไอน์สไตน์", "อัลเบิร์ต ไอน์สไตน์"),
           ("ไทย", "ประเทศไทย"), ("Bangkok", "กรุงเทพมหานคร")},
}

# Text that sits only in tables, galleries, file captions, math, comments or categories of the sample.
MUST_NOT_APPEAR: dict[str, list[str]] = {
    "en": ["Setagaya", "940,000", "Shibuya", "seen from the bay", "Largest special wards", "sqrt",
           "area figure rounded", "Capitals in Asia", "Lunar orbiter", "probe", "Craters near"],
    "de": ["Pankow", "Reichstagsgebäude", "Korona", "Marienplatz", "gerundet", "Hauptstadt in Europa"],
    "ru": ["1 038 600", "Московский Кремль", "Кратеры", "уточнить дату", "Столицы европейских государств"],
    "ja": ["世田谷区", "渋谷", "東京湾から見た", "クレーター", "2026年時点", "日本の都道府県"],
    "zh": ["海淀区", "北京市中心的", "日冕", "待补充人口数据", "中华人民共和国首都"],
    "ar": ["الزمالك", "منظر", "الهالة الشمسية", "تقدير", "عواصم أفريقيا"],
    "th": ["เขตบางเขน", "ทิวทัศน์ริม", "หลุมอุกกาบาต", "ตรวจสอบปี", "เมืองหลวงในทวีปเอเชีย"],
}
MARKUP_RESIDUE = ["[[", "]]", "{{", "}}", "<ref", "</", "/>", "'''", "''", "&nbsp;", "&ndash;", "&amp;",
                  "<math", "<!--", "{|", "|}", "wikitable", "thumb", "<gallery", "__"]


def parse_expected(marked: str) -> tuple[str, list[tuple[int, int, str]]]:
    text, links, pos = [], [], 0
    for m in re.finditer(r"⟦([^⟧→]+)(?:→([^⟧]+))?⟧", marked):
        text.append(marked[pos:m.start()])
        start = sum(map(len, text))
        anchor = m.group(1)
        text.append(anchor)
        links.append((start, start + len(anchor), m.group(2) or anchor))
        pos = m.end()
    text.append(marked[pos:])
    return "".join(text), links


def dump_path(lang: str) -> Path:
    return SAMPLE / "dumps" / f"{lang}wiki-20261101-pages-articles.xml"


def xml_pages(lang: str) -> list[tuple[int, int, str, bool]]:
    root = ET.parse(dump_path(lang)).getroot()
    return [(int(p.findtext(f"{NS}ns")), int(p.findtext(f"{NS}id")), p.findtext(f"{NS}title"),
             p.find(f"{NS}redirect") is not None) for p in root.iter(f"{NS}page")]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(lang: str) -> dict:
        if lang not in cache:
            out = tmp_path_factory.mktemp(f"extract-{lang}")
            extract_module.extract(dump=dump_path(lang), out=out, workers=1)
            rows = []
            for path in sorted(out.glob("pages-*.parquet")):
                rows += pq.read_table(path).to_pylist()
            cache[lang] = {
                "rows": {r["title"]: r for r in rows},
                "n_rows": len(rows),
                "redirects": pq.read_table(out / "redirects.parquet").to_pylist(),
                "stats": json.loads((out / "stats.json").read_text(encoding="utf-8")),
                "siteinfo": json.loads((out / "siteinfo.json").read_text(encoding="utf-8")),
            }
        return cache[lang]

    return get


@pytest.mark.parametrize(("lang", "title"), sorted(EXPECTED), ids=lambda v: v)
def test_first_paragraphs_exact(extracted, lang, title):
    row = extracted(lang)["rows"].get(title)
    assert row is not None, f"{lang}:{title} not extracted"
    got = row["paragraphs"][: len(EXPECTED[lang, title])]
    for i, marked in enumerate(EXPECTED[lang, title]):
        text, links = parse_expected(marked)
        assert got[i]["text"] == text, f"{lang}:{title} paragraph {i}\n got  {ascii(got[i]['text'])}\n want {ascii(text)}"
        got_links = [(link["start"], link["end"], link["title"]) for link in got[i]["links"]]
        assert got_links == links, f"{lang}:{title} paragraph {i}: " + repr(
            [(got[i]["text"][s:e], t) for s, e, t in got_links])


@pytest.mark.parametrize("lang", LANGS)
def test_articles_ids_redirects_and_siteinfo(extracted, lang):
    result = extracted(lang)
    pages = xml_pages(lang)
    articles = {title: page_id for ns, page_id, title, is_redirect in pages if ns == 0 and not is_redirect}
    others = {title for ns, _, title, _ in pages if ns != 0}
    rows = result["rows"]
    assert len(rows) == result["n_rows"]  # one row per article
    # Every article is there with its dump id (a disambiguation page may be flagged or skipped).
    missing = set(articles) - set(rows)
    assert len(missing) <= 1, missing
    assert set(rows) <= set(articles) and not set(rows) & others
    for title, row in rows.items():
        assert row["page_id"] == articles[title], title
    assert {(r["title"], r["target"]) for r in result["redirects"]} == EXPECTED_REDIRECTS[lang]
    stats = result["stats"]
    assert stats["articles"] == len(rows)
    assert stats["redirects"] == len(EXPECTED_REDIRECTS[lang])
    assert stats["pages_total"] == len(pages)
    assert stats["failed"] == 0
    assert stats["links"] == sum(len(p["links"]) for r in rows.values() for p in r["paragraphs"])
    assert result["siteinfo"]["lang"] == lang and result["siteinfo"]["dbname"] == f"{lang}wiki"


@pytest.mark.parametrize("lang", LANGS)
def test_no_markup_leaks_and_spans_are_sane(extracted, lang):
    rows = extracted(lang)["rows"]
    non_article_prefixes = ("File:", "Image:", "Category:", "Datei:", "Bild:", "Kategorie:", "Файл:",
                            "Категория:", "ファイル:", "画像:", "カテゴリ:", "文件:", "分类:", "分類:", "ملف:",
                            "صورة:", "تصنيف:", "ไฟล์:", "หมวดหมู่:", "Wikt:", "Commons:")
    interlanguage = re.compile(r"^(en|de|ru|ja|zh|ar|th|fr):", re.IGNORECASE)
    for title, row in rows.items():
        for para in row["paragraphs"]:
            text = para["text"]
            assert text.strip(), f"{lang}:{title}: empty paragraph"
            for residue in MARKUP_RESIDUE:
                assert residue not in text, f"{lang}:{title}: {residue!r} in {text!r}"
            for bad in MUST_NOT_APPEAR[lang]:
                assert bad not in text, f"{lang}:{title}: {bad!r} leaked into {text!r}"
            assert "mc^2" not in text and "mc2" not in text
            previous_end = 0
            for link in para["links"]:
                start, end, target = link["start"], link["end"], link["title"]
                assert previous_end <= start < end <= len(text), (title, link)
                previous_end = end
                assert text[start:end].strip() == text[start:end], (title, text[start:end])
                assert "_" not in target and "#" not in target and target == target.strip()
                assert target[:1] == target[:1].upper(), target
                assert not target.startswith(non_article_prefixes), target
                assert not interlanguage.match(target), target


def test_link_trails_follow_mediawiki(extracted):
    """[[dog]]s -> "dogs" where the language has trails; in ja/zh/th the following letters stay outside."""
    def anchors(lang: str, title: str) -> dict[str, str]:
        row = extracted(lang)["rows"][title]
        return {p["text"][link["start"]:link["end"]]: link["title"] for p in row["paragraphs"] for link in p["links"]}

    assert anchors("en", "Solar System")["planets"] == "Planet"
    assert anchors("de", "Rhein")["Flüsse"] == "Fluss"  # piped: no trail to add
    assert anchors("de", "Nil")["Afrikas"] == "Afrika"
    assert anchors("ru", "Каир")["Нила"] == "Нил"
    th = anchors("th", "โลก")
    assert th["ดาวเคราะห์"] == "ดาวเคราะห์" and th["ดวงจันทร์"] == "ดวงจันทร์"
    assert anchors("ja", "富士山")["活火山"] == "活火山"
