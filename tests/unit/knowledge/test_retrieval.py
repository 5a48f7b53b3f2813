"""What a RetrieveAndGenerate session's question is searched with: the question, and the session's earlier
questions at half its weight (the same on MiniLM's real vectors: tests/integration/knowledge)."""

from __future__ import annotations

import numpy as np

from outcrop.knowledge.retrieval import BLOCKED_QUESTION, conversation_query, earlier_questions

#: Three documents on three axes of four; the fourth is what none of them is about ("how many", "and").
DOCUMENTS = np.eye(3, 4)


def _question(*weights: float) -> np.ndarray:
    vector = np.array(weights, dtype=float)
    return vector / np.linalg.norm(vector)


def _best(vector: list[float]) -> int:
    return int(np.argmax(DOCUMENTS @ np.array(vector)))


def test_earlier_questions_are_the_last_ones_newest_first_without_blocked_ones():
    turns = [{"question": q, "answer": "a"} for q in ("first", "second", BLOCKED_QUESTION, "third")]
    assert earlier_questions(turns) == ["third", "second"]
    assert earlier_questions([]) == []


def test_a_question_alone_is_searched_as_asked():
    vector, words = conversation_query("How tall is it?", [], np.array([_question(0, 1, 0, 0.5)]))
    assert _best(vector) == 1 and words == "How tall is it?"


def test_a_follow_up_that_names_nothing_finds_the_conversations_document():
    # "And how many of them roll over?" is close to no document, and a little closer to the wrong one.
    follow_up, earlier = _question(0.1, 0.15, 0.25, 1), _question(1, 0, 0, 0.5)
    assert _best(follow_up.tolist()) == 2
    vector, words = conversation_query("And how many of them roll over?", ["How many vacation days?"],
                                       np.array([follow_up, earlier]))
    assert _best(vector) == 0 and np.isclose(np.linalg.norm(vector), 1)
    assert words == "And how many of them roll over?\nHow many vacation days?"


def test_a_question_on_a_new_subject_still_wins():
    new_subject, earlier = _question(0.1, 0.8, 0, 0.6), _question(1, 0, 0, 0.5)
    vector, _ = conversation_query("Where do visitors park?", ["How many vacation days?"],
                                   np.array([new_subject, earlier]))
    assert _best(vector) == 1
