"""MySQL dump parsing: escapes, NULL, binary literals, multi-row inserts, bad lines, the wrong kind of file."""

from __future__ import annotations

import pytest

from data_prep.common.errors import InputError
from data_prep.entities.sqldump import DumpStats, SQLSyntaxError, iter_table_rows, parse_rows, parse_values
from tests.corpus_fixtures import PAGE_PROPS_HEADER as HEADER
from tests.corpus_fixtures import write_gz


def test_values_with_every_escape():
    line = rb"(1,'it\'s','back\\slash','a\"b','nl\nt\tr\rz\Z0\0b\b','100\%\_','x''y','',NULL,-7,3.5,-1.5e-3,2E3)" + b";"
    (row,) = parse_values(line)
    assert row == (
        1, "it's", "back\\slash", 'a"b', "nl\nt\tr\rz\x1a0\x00b\x08", "100\\%\\_", "x'y", "", None, -7, 3.5, -1.5e-3, 2000.0,
    )  # fmt: skip


def test_commas_parentheses_and_semicolons_inside_strings():
    line = b"(1,'a,b','(c)','d),(e','f;g','\\')'),(2,')',';','','','');"
    assert parse_values(line) == [(1, "a,b", "(c)", "d),(e", "f;g", "')"), (2, ")", ";", "", "", "")]


def test_binary_literals_and_utf8():
    line = "(1,_binary'Q\\0\\'1',0x51343200,X'ff00',_binary 'x','東京\\'都',0x)".encode() + b";"
    assert parse_values(line) == [(1, b"Q\x00'1", b"Q42\x00", b"\xff\x00", b"x", "東京'都", b"")]


def test_invalid_utf8_is_replaced_not_fatal():
    assert parse_values(b"(1,'a\xffb');") == [(1, "a\ufffdb")]


def test_a_trailing_backslash_before_the_quote_ends_the_string():
    # 'a\\' is the string a\ ; the next quote starts the next value.
    assert parse_values(b"(1,'a\\\\','b');") == [(1, "a\\", "b")]


@pytest.mark.parametrize(
    "line",
    [
        b"(1,'unterminated);",
        b"(1,'a'",  # no closing parenthesis
        b"(1,'a')",  # no terminating semicolon
        b"(1,'a') junk;",
        b"(1,bareword);",
        b"(1,'a');(2,'b');",
        b"1,'a');",
    ],
)
def test_malformed_values_raise(line):
    with pytest.raises(SQLSyntaxError):
        parse_values(line)


def test_unterminated_string_fails_fast():
    # The string pattern cannot backtrack exponentially on a long, broken value.
    with pytest.raises(SQLSyntaxError):
        parse_values(b"(1,'" + b"a\\'" * 200_000 + b")")


def test_stream_rows_by_column_name_counts_bad_lines(tmp_path):
    body = (
        b"INSERT INTO `page_props` VALUES (1,'wikibase_item','Q1',NULL),(2,'defaultsort','O\\'Neil, Ann',NULL);\n"
        b"INSERT INTO `page_props` VALUES (3,'wikibase_item','Q3',NULL),(4,'wikibase_item',BROKEN);\n"
        b"INSERT INTO `other_table` VALUES (9,'x');\n"
        b"INSERT INTO `page_props` (`pp_page`,`pp_propname`,`pp_value`) VALUES (5,'wikibase_item','Q5');\n"
        b"INSERT INTO `page_props` VALUES (6,'wikibase_item','Q6',NULL),(7,'too','few');\n"
        b"UNLOCK TABLES;\n"
    )
    path = write_gz(tmp_path / "enwiki-20261101-page_props.sql.gz", HEADER + body)
    stats = DumpStats()
    seen = []
    rows = list(iter_table_rows(path, "page_props", stats, on_progress=seen.append))
    assert rows == [
        {"pp_page": 1, "pp_propname": "wikibase_item", "pp_value": "Q1", "pp_sortkey": None},
        {"pp_page": 2, "pp_propname": "defaultsort", "pp_value": "O'Neil, Ann", "pp_sortkey": None},
        {"pp_page": 5, "pp_propname": "wikibase_item", "pp_value": "Q5"},
        {"pp_page": 6, "pp_propname": "wikibase_item", "pp_value": "Q6", "pp_sortkey": None},
    ]
    # The line with BROKEN is skipped whole (its good first row too): a corrupt line is not trusted.
    assert (stats.bad_lines, stats.bad_rows, stats.rows, stats.other_tables) == (1, 1, 4, {"other_table"})
    assert stats.first_errors == ["line 16: bad value at byte 81"]  # header is 14 lines
    assert seen and seen[-1] == path.stat().st_size


def test_plain_uncompressed_dump_without_create_table_yields_tuples(tmp_path):
    path = tmp_path / "x.sql"
    path.write_bytes(b"INSERT INTO `page_props` VALUES (1,'wikibase_item','Q1',NULL);\n")
    assert list(iter_table_rows(path, "page_props")) == [(1, "wikibase_item", "Q1", None)]


def test_wrong_files_are_one_line_input_errors(tmp_path):
    json_file = write_gz(tmp_path / "a.sql.gz", b'[\n{"type":"item","id":"Q1"}\n]\n')
    with pytest.raises(InputError, match="not a SQL dump"):
        list(iter_table_rows(json_file, "page_props"))
    other = write_gz(tmp_path / "b.sql.gz", b"-- MySQL dump\nINSERT INTO `langlinks` VALUES (1,'de','X');\n")
    with pytest.raises(InputError, match=r"no CREATE TABLE or INSERT for table `page_props` \(tables found: langlinks\)"):
        list(iter_table_rows(other, "page_props"))
    truncated = tmp_path / "c.sql.gz"
    full = write_gz(tmp_path / "full.sql.gz", HEADER * 50).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        list(iter_table_rows(truncated, "page_props"))
    with pytest.raises(InputError, match="cannot open"):
        list(iter_table_rows(tmp_path / "missing.sql.gz", "page_props"))


def test_row_regex_fast_path_equals_the_general_parser():
    lines = [
        rb"(1,'a\'b','c\\\\d',NULL,_binary'x\0y',0x4142,-3.5e2,'it''s','(,)',X'00ff',''),(2,'',NULL,'\n\t\Z\%',-7,'',1,2,3,4,5);",
        b"(1,'a,b','(c)','d),(e','f;g','\\')'),(2,')',';','','','');",
        b"(1,'x') ;",
    ]
    for line in lines:
        width = len(parse_values(line)[0])
        assert parse_rows(line, 0, width) == parse_values(line)
    # A row of another width or a syntax error: the fast path hands the line to the general parser.
    with pytest.raises(SQLSyntaxError):
        parse_rows(b"(1,'a'),(2,BROKEN);", 0, 2)
    assert parse_rows(b"(1,'a'),(2,'b','c');", 0, 2) == [(1, "a"), (2, "b", "c")]


def test_where_filter_skips_other_rows_and_counts_them(tmp_path):
    body = (
        b"INSERT INTO `page_props` VALUES (1,'wikibase_item','Q1',NULL),(1,'defaultsort','x',NULL),"
        b"(2,_binary'wikibase_item','Q2',NULL),(3,'wikibase\\_item','Q3',NULL);\n"
        b"INSERT INTO `page_props` VALUES (4,'wikibase_item','Q4',NULL),(5,'page_image_free','a.jpg',NULL,9);\n"
    )
    path = write_gz(tmp_path / "p.sql.gz", HEADER + body)
    stats = DumpStats()
    rows = list(iter_table_rows(path, "page_props", stats, where=("pp_propname", "wikibase_item")))
    # A binary-literal name matches too; 'wikibase\_item' keeps its backslash (MySQL's \_ rule), so not.
    assert [r["pp_page"] for r in rows] == [1, 2, 4]
    assert rows[1]["pp_propname"] == b"wikibase_item"
    # Line 2 has a 5-value row: the general parser reads it and the wrong-width row is a bad row.
    assert (stats.rows_filtered, stats.bad_rows) == (2, 1)
