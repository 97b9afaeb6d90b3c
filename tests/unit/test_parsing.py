from selftaught.method.parsing import parse_categorization, parse_modified_pair, parse_verdict
from selftaught.method.prompts import MODIFIED_ANSWER_END, MODIFIED_ANSWER_START, MODIFIED_QUESTION_MARKER


def test_category_answer_in_the_template_format_is_read():
    parsed = parse_categorization("Category: Coding\nComplexity: 7\nLength: (c)")
    assert (parsed.category, parsed.complexity, parsed.length) == ("Coding", 7, "c")


def test_category_answer_tolerates_markdown_case_and_ampersands():
    parsed = parse_categorization("**Category:** knowledge & reasoning\n**Complexity:** 9\nLength: e")
    assert (parsed.category, parsed.complexity, parsed.length) == ("Knowledge and Reasoning", 9, "e")


def test_category_with_extra_words_maps_to_the_longest_known_name():
    assert parse_categorization("Category: Mathematical reasoning (algebra)\nComplexity: 4").category == "Mathematical reasoning"


def test_length_is_optional_but_category_and_complexity_are_not():
    assert parse_categorization("Category: Other\nComplexity: 3").length is None
    assert parse_categorization("Category: Other") is None
    assert parse_categorization("Complexity: 3") is None


def test_unknown_category_or_out_of_range_complexity_is_unparseable():
    assert parse_categorization("Category: Poetry slam\nComplexity: 3") is None
    assert parse_categorization("Category: Coding\nComplexity: 11") is None
    assert parse_categorization("I think this is about code.") is None


def _pair_text(modified="Write about cats instead", answer="Cats are small felines.", end=True):
    text = f"{MODIFIED_QUESTION_MARKER}\n{modified}\n\n{MODIFIED_ANSWER_START}\n{answer}\n"
    return text + (MODIFIED_ANSWER_END if end else "")


def test_modified_pair_is_read_between_the_markers():
    parsed = parse_modified_pair("Sure!\n" + _pair_text())
    assert parsed.modified_instruction == "Write about cats instead"
    assert parsed.response == "Cats are small felines."


def test_modified_pair_without_the_end_marker_keeps_the_whole_answer():
    assert parse_modified_pair(_pair_text(end=False)).response == "Cats are small felines."


def test_modified_pair_missing_a_marker_or_a_part_is_dropped():
    assert parse_modified_pair(_pair_text().replace(MODIFIED_ANSWER_START, "")) is None
    assert parse_modified_pair(_pair_text(modified="  ")) is None
    assert parse_modified_pair(_pair_text(answer="")) is None
    assert parse_modified_pair("no markers at all") is None


def test_verdict_is_a_or_b_and_anything_ambiguous_is_none():
    assert parse_verdict("A is more accurate. [[A]]") == "A"
    assert parse_verdict("Final verdict: [[B]]") == "B"
    assert parse_verdict("[[A]] ... no wait [[B]]") is None
    assert parse_verdict("It's a tie: [[C]]") is None
    assert parse_verdict("") is None
